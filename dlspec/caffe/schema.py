"""Caffe's messages, declared here field by field, built at run time with `descriptor_pb2`.

Only the numbers and wire types of Caffe's `caffe.proto` are facts this module relies on; the
declarations are the project's own and cover what dlspec reads and writes: the net
(`NetParameter` with `layer` and the legacy `layers` V1 form), the blobs of a `.caffemodel`, the
parameters of every layer dlspec imports or exports, the data layers of a `train_val` file (so
that it parses; they become inputs), and the solver. No `protoc`, no generated code: the file
descriptor is assembled below and `message_factory.GetMessageClass` makes the classes.

A field Caffe has but this schema lacks is reported by the importer (E851 with its line), never
dropped silently.
"""

from __future__ import annotations

from functools import cache
from typing import Any

PACKAGE = "dlspec_caffe"

# type codes of descriptor_pb2.FieldDescriptorProto
_T = {"double": 1, "float": 2, "int64": 3, "uint64": 4, "int32": 5, "bool": 8, "string": 9, "msg": 11,
      "bytes": 12, "uint32": 13, "enum": 14}

# (name, number, type, label, default, type name, packed): label "o" optional, "r" repeated
F = tuple[Any, ...]


def _f(name: str, number: int, kind: str, default: Any = None, rep: bool = False, ref: str | None = None,
       packed: bool = False) -> F:
    return (name, number, kind, default, rep, ref, packed)


ENUMS: dict[str, dict[str, int]] = {
    "Phase": {"TRAIN": 0, "TEST": 1},
    "DimCheckMode": {"STRICT": 0, "PERMISSIVE": 1},
    "Engine": {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2},
    "PoolMethod": {"MAX": 0, "AVE": 1, "STOCHASTIC": 2},
    "RoundMode": {"CEIL": 0, "FLOOR": 1},
    "EltwiseOp": {"PROD": 0, "SUM": 1, "MAX": 2},
    "NormRegion": {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1},
    "VarianceNorm": {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2},
    "DB": {"LEVELDB": 0, "LMDB": 1},
    "Normalization": {"FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3},
    "SnapshotFormat": {"HDF5": 0, "BINARYPROTO": 1},
    "SolverMode": {"CPU": 0, "GPU": 1},
    "SolverType": {"SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3, "ADADELTA": 4, "ADAM": 5},
    "ReductionOp": {"SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4},
    "V1LayerType": {
        "NONE": 0, "ABSVAL": 35, "ACCURACY": 1, "ARGMAX": 30, "BNLL": 2, "CONCAT": 3, "CONTRASTIVE_LOSS": 37,
        "CONVOLUTION": 4, "DATA": 5, "DECONVOLUTION": 39, "DROPOUT": 6, "DUMMY_DATA": 32, "EUCLIDEAN_LOSS": 7,
        "ELTWISE": 25, "EXP": 38, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "HINGE_LOSS": 28,
        "IM2COL": 11, "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15, "MEMORY_DATA": 29,
        "MULTINOMIAL_LOGISTIC_LOSS": 16, "MVN": 34, "POOLING": 17, "POWER": 26, "RELU": 18, "SIGMOID": 19,
        "SIGMOID_CROSS_ENTROPY_LOSS": 27, "SILENCE": 36, "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22,
        "SLICE": 33, "TANH": 23, "WINDOW_DATA": 24, "THRESHOLD": 31,
    },
}

FILLER = "FillerParameter"

MESSAGES: dict[str, list[F]] = {
    "BlobShape": [_f("dim", 1, "int64", rep=True, packed=True)],
    "BlobProto": [
        _f("shape", 7, "msg", ref="BlobShape"), _f("data", 5, "float", rep=True, packed=True),
        _f("diff", 6, "float", rep=True, packed=True), _f("double_data", 8, "double", rep=True, packed=True),
        _f("double_diff", 9, "double", rep=True, packed=True), _f("num", 1, "int32", 0),
        _f("channels", 2, "int32", 0), _f("height", 3, "int32", 0), _f("width", 4, "int32", 0),
    ],
    "NetState": [_f("phase", 1, "enum", "TEST", ref="Phase"), _f("level", 2, "int32", 0),
                 _f("stage", 3, "string", rep=True)],
    "NetStateRule": [_f("phase", 1, "enum", ref="Phase"), _f("min_level", 2, "int32"), _f("max_level", 3, "int32"),
                     _f("stage", 4, "string", rep=True), _f("not_stage", 5, "string", rep=True)],
    "ParamSpec": [_f("name", 1, "string"), _f("share_mode", 2, "enum", ref="DimCheckMode"),
                  _f("lr_mult", 3, "float", 1.0), _f("decay_mult", 4, "float", 1.0)],
    FILLER: [_f("type", 1, "string", "constant"), _f("value", 2, "float", 0.0), _f("min", 3, "float", 0.0),
             _f("max", 4, "float", 1.0), _f("mean", 5, "float", 0.0), _f("std", 6, "float", 1.0),
             _f("sparse", 7, "int32", -1), _f("variance_norm", 8, "enum", "FAN_IN", ref="VarianceNorm")],
    "TransformationParameter": [
        _f("scale", 1, "float", 1.0), _f("mirror", 2, "bool", False), _f("crop_size", 3, "uint32", 0),
        _f("mean_file", 4, "string"), _f("mean_value", 5, "float", rep=True), _f("force_color", 6, "bool", False),
        _f("force_gray", 7, "bool", False)],
    "LossParameter": [_f("ignore_label", 1, "int32"), _f("normalization", 3, "enum", "VALID", ref="Normalization"),
                      _f("normalize", 2, "bool")],
    "AccuracyParameter": [_f("top_k", 1, "uint32", 1), _f("axis", 2, "int32", 1), _f("ignore_label", 3, "int32")],
    "ArgMaxParameter": [_f("out_max_val", 1, "bool", False), _f("top_k", 2, "uint32", 1), _f("axis", 3, "int32")],
    "BatchNormParameter": [_f("use_global_stats", 1, "bool"), _f("moving_average_fraction", 2, "float", 0.999),
                           _f("eps", 3, "float", 1e-5)],
    "BiasParameter": [_f("axis", 1, "int32", 1), _f("num_axes", 2, "int32", 1), _f("filler", 3, "msg", ref=FILLER)],
    "ConcatParameter": [_f("axis", 2, "int32", 1), _f("concat_dim", 1, "uint32", 1)],
    "ConvolutionParameter": [
        _f("num_output", 1, "uint32"), _f("bias_term", 2, "bool", True), _f("pad", 3, "uint32", rep=True),
        _f("kernel_size", 4, "uint32", rep=True), _f("stride", 6, "uint32", rep=True),
        _f("dilation", 18, "uint32", rep=True), _f("pad_h", 9, "uint32", 0), _f("pad_w", 10, "uint32", 0),
        _f("kernel_h", 11, "uint32"), _f("kernel_w", 12, "uint32"), _f("stride_h", 13, "uint32"),
        _f("stride_w", 14, "uint32"), _f("group", 5, "uint32", 1), _f("weight_filler", 7, "msg", ref=FILLER),
        _f("bias_filler", 8, "msg", ref=FILLER), _f("engine", 15, "enum", "DEFAULT", ref="Engine"),
        _f("axis", 16, "int32", 1), _f("force_nd_im2col", 17, "bool", False)],
    "CropParameter": [_f("axis", 1, "int32", 2), _f("offset", 2, "uint32", rep=True)],
    "DataParameter": [
        _f("source", 1, "string"), _f("batch_size", 4, "uint32"), _f("rand_skip", 7, "uint32", 0),
        _f("backend", 8, "enum", "LEVELDB", ref="DB"), _f("scale", 2, "float", 1.0), _f("mean_file", 3, "string"),
        _f("crop_size", 5, "uint32", 0), _f("mirror", 6, "bool", False),
        _f("force_encoded_color", 9, "bool", False), _f("prefetch", 10, "uint32", 4)],
    "DropoutParameter": [_f("dropout_ratio", 1, "float", 0.5)],
    "DummyDataParameter": [
        _f("data_filler", 1, "msg", rep=True, ref=FILLER), _f("shape", 6, "msg", rep=True, ref="BlobShape"),
        _f("num", 2, "uint32", rep=True), _f("channels", 3, "uint32", rep=True), _f("height", 4, "uint32", rep=True),
        _f("width", 5, "uint32", rep=True)],
    "EltwiseParameter": [_f("operation", 1, "enum", "SUM", ref="EltwiseOp"), _f("coeff", 2, "float", rep=True),
                         _f("stable_prod_grad", 3, "bool", True)],
    "ELUParameter": [_f("alpha", 1, "float", 1.0)],
    "ExpParameter": [_f("base", 1, "float", -1.0), _f("scale", 2, "float", 1.0), _f("shift", 3, "float", 0.0)],
    "FlattenParameter": [_f("axis", 1, "int32", 1), _f("end_axis", 2, "int32", -1)],
    "HDF5DataParameter": [_f("source", 1, "string"), _f("batch_size", 2, "uint32"), _f("shuffle", 3, "bool", False)],
    "ImageDataParameter": [
        _f("source", 1, "string"), _f("batch_size", 4, "uint32", 1), _f("rand_skip", 7, "uint32", 0),
        _f("shuffle", 8, "bool", False), _f("new_height", 9, "uint32", 0), _f("new_width", 10, "uint32", 0),
        _f("is_color", 11, "bool", True), _f("scale", 2, "float", 1.0), _f("mean_file", 3, "string"),
        _f("crop_size", 5, "uint32", 0), _f("mirror", 6, "bool", False), _f("root_folder", 12, "string", "")],
    "InnerProductParameter": [
        _f("num_output", 1, "uint32"), _f("bias_term", 2, "bool", True), _f("weight_filler", 3, "msg", ref=FILLER),
        _f("bias_filler", 4, "msg", ref=FILLER), _f("axis", 5, "int32", 1), _f("transpose", 6, "bool", False)],
    "InputParameter": [_f("shape", 1, "msg", rep=True, ref="BlobShape")],
    "LogParameter": [_f("base", 1, "float", -1.0), _f("scale", 2, "float", 1.0), _f("shift", 3, "float", 0.0)],
    "LRNParameter": [
        _f("local_size", 1, "uint32", 5), _f("alpha", 2, "float", 1.0), _f("beta", 3, "float", 0.75),
        _f("norm_region", 4, "enum", "ACROSS_CHANNELS", ref="NormRegion"), _f("k", 5, "float", 1.0),
        _f("engine", 6, "enum", "DEFAULT", ref="Engine")],
    "MemoryDataParameter": [_f("batch_size", 1, "uint32"), _f("channels", 2, "uint32"), _f("height", 3, "uint32"),
                            _f("width", 4, "uint32")],
    "MVNParameter": [_f("normalize_variance", 1, "bool", True), _f("across_channels", 2, "bool", False),
                     _f("eps", 3, "float", 1e-9)],
    "PoolingParameter": [
        _f("pool", 1, "enum", "MAX", ref="PoolMethod"), _f("pad", 4, "uint32", 0), _f("pad_h", 9, "uint32", 0),
        _f("pad_w", 10, "uint32", 0), _f("kernel_size", 2, "uint32"), _f("kernel_h", 5, "uint32"),
        _f("kernel_w", 6, "uint32"), _f("stride", 3, "uint32", 1), _f("stride_h", 7, "uint32"),
        _f("stride_w", 8, "uint32"), _f("engine", 11, "enum", "DEFAULT", ref="Engine"),
        _f("global_pooling", 12, "bool", False), _f("round_mode", 13, "enum", "CEIL", ref="RoundMode")],
    "PowerParameter": [_f("power", 1, "float", 1.0), _f("scale", 2, "float", 1.0), _f("shift", 3, "float", 0.0)],
    "PReLUParameter": [_f("filler", 1, "msg", ref=FILLER), _f("channel_shared", 2, "bool", False)],
    "ReductionParameter": [_f("operation", 1, "enum", "SUM", ref="ReductionOp"), _f("axis", 2, "int32", 0),
                           _f("coeff", 3, "float", 1.0)],
    "ReLUParameter": [_f("negative_slope", 1, "float", 0.0), _f("engine", 2, "enum", "DEFAULT", ref="Engine")],
    "ReshapeParameter": [_f("shape", 1, "msg", ref="BlobShape"), _f("axis", 2, "int32", 0),
                         _f("num_axes", 3, "int32", -1)],
    "ScaleParameter": [_f("axis", 1, "int32", 1), _f("num_axes", 2, "int32", 1), _f("filler", 3, "msg", ref=FILLER),
                       _f("bias_term", 4, "bool", False), _f("bias_filler", 5, "msg", ref=FILLER)],
    "SigmoidParameter": [_f("engine", 1, "enum", "DEFAULT", ref="Engine")],
    "SliceParameter": [_f("axis", 3, "int32", 1), _f("slice_point", 2, "uint32", rep=True),
                       _f("slice_dim", 1, "uint32", 1)],
    "SoftmaxParameter": [_f("engine", 1, "enum", "DEFAULT", ref="Engine"), _f("axis", 2, "int32", 1)],
    "TanHParameter": [_f("engine", 1, "enum", "DEFAULT", ref="Engine")],
    "ThresholdParameter": [_f("threshold", 1, "float", 0.0)],
    "WindowDataParameter": [
        _f("source", 1, "string"), _f("scale", 2, "float", 1.0), _f("mean_file", 3, "string"),
        _f("batch_size", 4, "uint32"), _f("crop_size", 5, "uint32", 0), _f("mirror", 6, "bool", False),
        _f("fg_threshold", 7, "float", 0.5), _f("bg_threshold", 8, "float", 0.5), _f("fg_fraction", 9, "float", 0.25),
        _f("context_pad", 10, "uint32", 0), _f("crop_mode", 11, "string", "warp"),
        _f("cache_images", 12, "bool", False), _f("root_folder", 13, "string", "")],
}

#: LayerParameter's `<kind>_param` fields: (field name, number, message)
LAYER_PARAMS = [
    ("transform_param", 100, "TransformationParameter"), ("loss_param", 101, "LossParameter"),
    ("accuracy_param", 102, "AccuracyParameter"), ("argmax_param", 103, "ArgMaxParameter"),
    ("batch_norm_param", 139, "BatchNormParameter"), ("bias_param", 141, "BiasParameter"),
    ("concat_param", 104, "ConcatParameter"), ("convolution_param", 106, "ConvolutionParameter"),
    ("crop_param", 144, "CropParameter"), ("data_param", 107, "DataParameter"),
    ("dropout_param", 108, "DropoutParameter"), ("dummy_data_param", 109, "DummyDataParameter"),
    ("eltwise_param", 110, "EltwiseParameter"), ("elu_param", 140, "ELUParameter"),
    ("exp_param", 111, "ExpParameter"), ("flatten_param", 135, "FlattenParameter"),
    ("hdf5_data_param", 112, "HDF5DataParameter"), ("image_data_param", 115, "ImageDataParameter"),
    ("inner_product_param", 117, "InnerProductParameter"), ("input_param", 143, "InputParameter"),
    ("log_param", 134, "LogParameter"), ("lrn_param", 118, "LRNParameter"),
    ("memory_data_param", 119, "MemoryDataParameter"), ("mvn_param", 120, "MVNParameter"),
    ("pooling_param", 121, "PoolingParameter"), ("power_param", 122, "PowerParameter"),
    ("prelu_param", 131, "PReLUParameter"), ("reduction_param", 136, "ReductionParameter"),
    ("relu_param", 123, "ReLUParameter"), ("reshape_param", 133, "ReshapeParameter"),
    ("scale_param", 142, "ScaleParameter"), ("sigmoid_param", 124, "SigmoidParameter"),
    ("softmax_param", 125, "SoftmaxParameter"), ("slice_param", 126, "SliceParameter"),
    ("tanh_param", 127, "TanHParameter"), ("threshold_param", 128, "ThresholdParameter"),
    ("window_data_param", 129, "WindowDataParameter"),
]
#: V1LayerParameter's parameter fields (the legacy `layers` form)
V1_PARAMS = [
    ("accuracy_param", 27, "AccuracyParameter"), ("argmax_param", 23, "ArgMaxParameter"),
    ("concat_param", 9, "ConcatParameter"), ("convolution_param", 10, "ConvolutionParameter"),
    ("data_param", 11, "DataParameter"), ("dropout_param", 12, "DropoutParameter"),
    ("dummy_data_param", 26, "DummyDataParameter"), ("eltwise_param", 24, "EltwiseParameter"),
    ("exp_param", 41, "ExpParameter"), ("hdf5_data_param", 13, "HDF5DataParameter"),
    ("image_data_param", 15, "ImageDataParameter"), ("inner_product_param", 17, "InnerProductParameter"),
    ("lrn_param", 18, "LRNParameter"), ("memory_data_param", 22, "MemoryDataParameter"),
    ("mvn_param", 34, "MVNParameter"), ("pooling_param", 19, "PoolingParameter"),
    ("power_param", 21, "PowerParameter"), ("relu_param", 30, "ReLUParameter"),
    ("sigmoid_param", 38, "SigmoidParameter"), ("softmax_param", 39, "SoftmaxParameter"),
    ("slice_param", 31, "SliceParameter"), ("tanh_param", 37, "TanHParameter"),
    ("threshold_param", 25, "ThresholdParameter"), ("window_data_param", 20, "WindowDataParameter"),
    ("transform_param", 36, "TransformationParameter"), ("loss_param", 42, "LossParameter"),
]

MESSAGES["LayerParameter"] = [
    _f("name", 1, "string"), _f("type", 2, "string"), _f("bottom", 3, "string", rep=True),
    _f("top", 4, "string", rep=True), _f("phase", 10, "enum", ref="Phase"),
    _f("loss_weight", 5, "float", rep=True), _f("param", 6, "msg", rep=True, ref="ParamSpec"),
    _f("blobs", 7, "msg", rep=True, ref="BlobProto"), _f("propagate_down", 11, "bool", rep=True),
    _f("include", 8, "msg", rep=True, ref="NetStateRule"), _f("exclude", 9, "msg", rep=True, ref="NetStateRule"),
    *[_f(n, k, "msg", ref=m) for n, k, m in LAYER_PARAMS],
]
MESSAGES["V1LayerParameter"] = [
    _f("bottom", 2, "string", rep=True), _f("top", 3, "string", rep=True), _f("name", 4, "string"),
    _f("include", 32, "msg", rep=True, ref="NetStateRule"), _f("exclude", 33, "msg", rep=True, ref="NetStateRule"),
    _f("type", 5, "enum", ref="V1LayerType"), _f("blobs", 6, "msg", rep=True, ref="BlobProto"),
    _f("param", 1001, "string", rep=True), _f("blob_share_mode", 1002, "enum", rep=True, ref="DimCheckMode"),
    _f("blobs_lr", 7, "float", rep=True), _f("weight_decay", 8, "float", rep=True),
    _f("loss_weight", 35, "float", rep=True),
    *[_f(n, k, "msg", ref=m) for n, k, m in V1_PARAMS],
]
MESSAGES["NetParameter"] = [
    _f("name", 1, "string"), _f("input", 3, "string", rep=True), _f("input_shape", 8, "msg", rep=True, ref="BlobShape"),
    _f("input_dim", 4, "int32", rep=True), _f("force_backward", 5, "bool", False),
    _f("state", 6, "msg", ref="NetState"), _f("debug_info", 7, "bool", False),
    _f("layer", 100, "msg", rep=True, ref="LayerParameter"), _f("layers", 2, "msg", rep=True, ref="V1LayerParameter"),
]
MESSAGES["SolverParameter"] = [
    _f("net", 24, "string"), _f("net_param", 25, "msg", ref="NetParameter"), _f("train_net", 1, "string"),
    _f("test_net", 2, "string", rep=True), _f("train_net_param", 21, "msg", ref="NetParameter"),
    _f("test_net_param", 22, "msg", rep=True, ref="NetParameter"), _f("train_state", 26, "msg", ref="NetState"),
    _f("test_state", 27, "msg", rep=True, ref="NetState"), _f("test_iter", 3, "int32", rep=True),
    _f("test_interval", 4, "int32", 0), _f("test_compute_loss", 19, "bool", False),
    _f("test_initialization", 32, "bool", True), _f("base_lr", 5, "float"), _f("display", 6, "int32"),
    _f("average_loss", 33, "int32", 1), _f("max_iter", 7, "int32"), _f("iter_size", 36, "int32", 1),
    _f("lr_policy", 8, "string"), _f("gamma", 9, "float"), _f("power", 10, "float"), _f("momentum", 11, "float"),
    _f("weight_decay", 12, "float"), _f("regularization_type", 29, "string", "L2"), _f("stepsize", 13, "int32"),
    _f("stepvalue", 34, "int32", rep=True), _f("clip_gradients", 35, "float", -1.0), _f("snapshot", 14, "int32", 0),
    _f("snapshot_prefix", 15, "string"), _f("snapshot_diff", 16, "bool", False),
    _f("snapshot_format", 37, "enum", "BINARYPROTO", ref="SnapshotFormat"),
    _f("solver_mode", 17, "enum", "GPU", ref="SolverMode"), _f("device_id", 18, "int32", 0),
    _f("random_seed", 20, "int64", -1), _f("type", 40, "string", "SGD"), _f("delta", 31, "float", 1e-8),
    _f("momentum2", 39, "float", 0.999), _f("rms_decay", 38, "float", 0.99), _f("debug_info", 23, "bool", False),
    _f("snapshot_after_train", 28, "bool", True), _f("solver_type", 30, "enum", "SGD", ref="SolverType"),
    _f("layer_wise_reduce", 41, "bool", True), _f("weights", 42, "string", rep=True),
]


def _default_text(kind: str, v: Any) -> str:
    if kind == "bool":
        return "true" if v else "false"
    if kind in ("float", "double"):
        return repr(float(v))
    return str(v)


@cache
def messages() -> dict[str, Any]:
    """Message name → generated class (built once per process)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="dlspec_caffe.proto", package=PACKAGE, syntax="proto2")
    for ename, values in ENUMS.items():  # each enum in a scope of its own: value names repeat (MAX, SUM)
        e = fdp.message_type.add(name=f"{ename}Scope").enum_type.add(name=ename)
        for vname, num in values.items():
            e.value.add(name=vname, number=num)
    for mname, fields in MESSAGES.items():
        m = fdp.message_type.add(name=mname)
        for name, number, kind, default, rep, ref, packed in fields:
            f = m.field.add(name=name, number=number, type=_T[kind], label=3 if rep else 1)
            if ref is not None:
                f.type_name = f".{PACKAGE}.{ref}Scope.{ref}" if kind == "enum" else f".{PACKAGE}.{ref}"
            if default is not None and not rep:
                f.default_value = _default_text(kind, default)
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    fd = pool.FindFileByName("dlspec_caffe.proto")
    return {name: message_factory.GetMessageClass(fd.message_types_by_name[name]) for name in MESSAGES}


def message(name: str) -> Any:
    """A new, empty message of Caffe's type `name` (`NetParameter`, `SolverParameter`, ...)."""
    return messages()[name]()
