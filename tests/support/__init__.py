"""Test support shared by several test modules: real Ray clusters, real MLflow servers."""
