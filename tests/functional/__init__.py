"""lightning_xai.functional (pure torch maths: CAM, SHAP, calibration, drift, faithfulness, localization,
targets, layer search) and the synthetic datasets."""
