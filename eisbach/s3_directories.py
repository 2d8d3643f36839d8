"""`directory()` outputs through snakemake-storage-plugin-s3 when jobs share no filesystem.

The plugin (0.3.6, the newest release) remembers the first answer of ``StorageObject.is_dir()``.
The main process asks while it builds the DAG, before the job has run, so a folder that a remote
job (a Kubernetes pod) uploads afterwards still reads as missing, and the job fails with
MissingOutputException although every file is in the bucket. Only a positive answer can be
remembered safely: S3 has no folders, so a folder exists once one key lies below it, and keys
below it only appear. ``remember_only_folders_found()`` makes the plugin ask again until then.
The workflow calls it (workflow/rules/common.smk), in the main process and in every job.
"""

from __future__ import annotations


def remember_only_folders_found() -> bool:
    """Patches the plugin's ``is_dir``; False when the plugin is not installed."""
    try:
        from snakemake_storage_plugin_s3 import StorageObject
    except ImportError:
        return False
    if getattr(StorageObject.is_dir, "rechecks_missing_folders", False):
        return True

    def is_dir(self) -> bool:
        if not self._is_dir:
            self._is_dir = any(self.get_subkeys())
        return self._is_dir

    is_dir.rechecks_missing_folders = True
    StorageObject.is_dir = is_dir
    return True


__all__ = ["remember_only_folders_found"]
