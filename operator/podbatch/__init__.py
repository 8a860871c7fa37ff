"""podbatch: Azure Batch semantics on Kubernetes."""

GROUP = "podbatch.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
