"""Files on disk: model directories, output folders owned by record, run folders and
prediction files."""
