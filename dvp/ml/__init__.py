"""Energy regression and gamma/hadron classification with LightGBM (dvp train, dvp apply-models).

- :mod:`.features`: feature and quality evaluation from column arrays (derived features);
- :mod:`.split`: grouped, order-independent fold assignment by array event;
- :mod:`.dataset`: loading only the needed columns of product directories;
- :mod:`.model`: training with grouped K-fold cross-validation and early stopping, and
  the model set on disk (LightGBM model files + JSON metadata).
"""
