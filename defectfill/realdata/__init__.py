"""Real fabric end to end: line-scan strips (`strips`) and the real-stains run (`stains_run`)."""
