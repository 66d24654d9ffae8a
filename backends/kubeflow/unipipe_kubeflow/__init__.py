"""unipipe backend for Kubeflow Pipelines v2 (see README.md): codegen, kfp compile, local executor."""
