"""Measurements several families share: classifier accuracy, few-shot episodes, the linear probe, calibration."""
