"""Caffe: `deploy.prototxt` / `train_val.prototxt` + `.caffemodel` + `solver.prototxt` in and out.

`schema` declares Caffe's messages (no Caffe, no protoc needed); `reader` parses the files with
their line numbers and resource limits; `importer` turns a net into IR layers for the spec
writer; `solver` maps a solver to a recipe and back; `backend` writes a graph as Caffe files and
runs them with OpenCV's `dnn` module (the reference Caffe runtime). See docs/caffe.md.
"""
