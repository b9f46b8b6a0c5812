"""Scoring and showing: metrics, comparisons of models, reports, model inspection and drawing."""
