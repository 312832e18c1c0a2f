"""Real fabric: line-scan strips (`strips`: tiles for the models, predictions stitched back)."""
