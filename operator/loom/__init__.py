"""Loom: a Kubernetes operator for the whole life of a model."""

GROUP = "loom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
