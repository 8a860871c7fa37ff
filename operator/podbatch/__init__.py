"""podbatch: Azure Batch semantics on Kubernetes."""

GROUP = "podbatch.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("podbatch")
    except PackageNotFoundError:   # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()
