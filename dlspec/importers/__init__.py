"""Importers: models from other formats turned into readable specs plus canonical weights.

`dlspec.importers.onnx.import_model(path)` reads an ONNX file into an `Imported` graph of IR
layers; `dlspec.importers.spec_writer.write_spec(imported)` renders it as `.dls` text.
"""
