"""Batch scoring (`mlship predict-batch`): engine (local), spark, io (files, folders, s3), rows, run, report."""
