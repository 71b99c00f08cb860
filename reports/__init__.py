"""Sensitivity report for a hyperparameter study: which hyperparameter matters most, with evidence."""
