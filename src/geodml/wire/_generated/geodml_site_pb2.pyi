from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
    BFLOAT16: _ClassVar[DType]
    UINT32: _ClassVar[DType]
    QINT8: _ClassVar[DType]
    UINT64: _ClassVar[DType]
    QFLOAT8: _ClassVar[DType]

class Layout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LAYOUT_UNSPECIFIED: _ClassVar[Layout]
    DENSE: _ClassVar[Layout]
    SPARSE: _ClassVar[Layout]

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_UNSPECIFIED: _ClassVar[Compression]
    NONE: _ClassVar[Compression]
    ZSTD: _ClassVar[Compression]
DTYPE_UNSPECIFIED: DType
FLOAT64: DType
FLOAT32: DType
FLOAT16: DType
BFLOAT16: DType
UINT32: DType
QINT8: DType
UINT64: DType
QFLOAT8: DType
LAYOUT_UNSPECIFIED: Layout
DENSE: Layout
SPARSE: Layout
COMPRESSION_UNSPECIFIED: Compression
NONE: Compression
ZSTD: Compression

class VectorChunk(_message.Message):
    __slots__ = ("slot", "start", "count", "dtype", "layout", "compression", "nnz", "data")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    NNZ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    slot: int
    start: int
    count: int
    dtype: DType
    layout: Layout
    compression: Compression
    nnz: int
    data: bytes
    def __init__(self, slot: _Optional[int] = ..., start: _Optional[int] = ..., count: _Optional[int] = ..., dtype: _Optional[_Union[DType, str]] = ..., layout: _Optional[_Union[Layout, str]] = ..., compression: _Optional[_Union[Compression, str]] = ..., nnz: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class WireFormat(_message.Message):
    __slots__ = ("dtype", "compression", "allow_sparse")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPARSE_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    compression: Compression
    allow_sparse: bool
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., compression: _Optional[_Union[Compression, str]] = ..., allow_sparse: _Optional[bool] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeReply(_message.Message):
    __slots__ = ("site", "region", "rows", "features", "nnz", "positives", "data_fingerprint", "feature_space_fingerprint", "feature_space_json", "protocol_version", "capabilities", "support_size", "shards", "raw_export_allowed", "export_bytes_estimate", "secure_aggregation_key", "requires_secure_aggregation", "privacy")
    SITE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NNZ_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    DATA_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPACE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPACE_JSON_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    RAW_EXPORT_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    EXPORT_BYTES_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    SECURE_AGGREGATION_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_SECURE_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    site: str
    region: str
    rows: int
    features: int
    nnz: int
    positives: int
    data_fingerprint: str
    feature_space_fingerprint: str
    feature_space_json: str
    protocol_version: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    support_size: int
    shards: int
    raw_export_allowed: bool
    export_bytes_estimate: int
    secure_aggregation_key: bytes
    requires_secure_aggregation: bool
    privacy: PrivacyBudget
    def __init__(self, site: _Optional[str] = ..., region: _Optional[str] = ..., rows: _Optional[int] = ..., features: _Optional[int] = ..., nnz: _Optional[int] = ..., positives: _Optional[int] = ..., data_fingerprint: _Optional[str] = ..., feature_space_fingerprint: _Optional[str] = ..., feature_space_json: _Optional[str] = ..., protocol_version: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., support_size: _Optional[int] = ..., shards: _Optional[int] = ..., raw_export_allowed: _Optional[bool] = ..., export_bytes_estimate: _Optional[int] = ..., secure_aggregation_key: _Optional[bytes] = ..., requires_secure_aggregation: _Optional[bool] = ..., privacy: _Optional[_Union[PrivacyBudget, _Mapping]] = ...) -> None: ...

class PrivacyBudget(_message.Message):
    __slots__ = ("epsilon", "delta", "epsilon_spent", "noise_multipliers")
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    EPSILON_SPENT_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIERS_FIELD_NUMBER: _ClassVar[int]
    epsilon: float
    delta: float
    epsilon_spent: float
    noise_multipliers: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., epsilon_spent: _Optional[float] = ..., noise_multipliers: _Optional[_Iterable[float]] = ...) -> None: ...

class SecureAggregation(_message.Message):
    __slots__ = ("peers", "nonce", "fraction_bits")
    class Peer(_message.Message):
        __slots__ = ("site", "public_key")
        SITE_FIELD_NUMBER: _ClassVar[int]
        PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
        site: str
        public_key: bytes
        def __init__(self, site: _Optional[str] = ..., public_key: _Optional[bytes] = ...) -> None: ...
    PEERS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_BITS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[SecureAggregation.Peer]
    nonce: bytes
    fraction_bits: int
    def __init__(self, peers: _Optional[_Iterable[_Union[SecureAggregation.Peer, _Mapping]]] = ..., nonce: _Optional[bytes] = ..., fraction_bits: _Optional[int] = ...) -> None: ...

class PrivacyRequest(_message.Message):
    __slots__ = ("clip", "noise_multiplier", "nonce")
    CLIP_FIELD_NUMBER: _ClassVar[int]
    NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    clip: float
    noise_multiplier: float
    nonce: bytes
    def __init__(self, clip: _Optional[float] = ..., noise_multiplier: _Optional[float] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("loss", "lam", "feature_space_fingerprint", "features", "restrict_to_support", "reply_format", "job", "up_compression", "sample_fraction", "secure", "privacy", "validation_share", "validation_seed", "down_compression", "up_deltas")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LAM_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SPACE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    RESTRICT_TO_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    REPLY_FORMAT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    UP_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SECURE_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SHARE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SEED_FIELD_NUMBER: _ClassVar[int]
    DOWN_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    UP_DELTAS_FIELD_NUMBER: _ClassVar[int]
    loss: str
    lam: float
    feature_space_fingerprint: str
    features: int
    restrict_to_support: bool
    reply_format: WireFormat
    job: str
    up_compression: str
    sample_fraction: float
    secure: SecureAggregation
    privacy: PrivacyRequest
    validation_share: float
    validation_seed: int
    down_compression: str
    up_deltas: bool
    def __init__(self, loss: _Optional[str] = ..., lam: _Optional[float] = ..., feature_space_fingerprint: _Optional[str] = ..., features: _Optional[int] = ..., restrict_to_support: _Optional[bool] = ..., reply_format: _Optional[_Union[WireFormat, _Mapping]] = ..., job: _Optional[str] = ..., up_compression: _Optional[str] = ..., sample_fraction: _Optional[float] = ..., secure: _Optional[_Union[SecureAggregation, _Mapping]] = ..., privacy: _Optional[_Union[PrivacyRequest, _Mapping]] = ..., validation_share: _Optional[float] = ..., validation_seed: _Optional[int] = ..., down_compression: _Optional[str] = ..., up_deltas: _Optional[bool] = ...) -> None: ...

class PrepareReply(_message.Message):
    __slots__ = ("session", "rows", "support_size", "chunk", "validation_rows")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    session: str
    rows: int
    support_size: int
    chunk: VectorChunk
    validation_rows: int
    def __init__(self, session: _Optional[str] = ..., rows: _Optional[int] = ..., support_size: _Optional[int] = ..., chunk: _Optional[_Union[VectorChunk, _Mapping]] = ..., validation_rows: _Optional[int] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("session", "round", "want_gradient", "want_hvp", "has_w", "step", "chunk", "full_precision", "dropped_peers", "validate", "commit", "commit_coefficients", "commit_memory", "has_direction")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    WANT_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    WANT_HVP_FIELD_NUMBER: _ClassVar[int]
    HAS_W_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FULL_PRECISION_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PEERS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_MEMORY_FIELD_NUMBER: _ClassVar[int]
    HAS_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    session: str
    round: int
    want_gradient: bool
    want_hvp: bool
    has_w: bool
    step: float
    chunk: VectorChunk
    full_precision: bool
    dropped_peers: _containers.RepeatedScalarFieldContainer[str]
    validate: bool
    commit: bool
    commit_coefficients: _containers.RepeatedScalarFieldContainer[float]
    commit_memory: int
    has_direction: bool
    def __init__(self, session: _Optional[str] = ..., round: _Optional[int] = ..., want_gradient: _Optional[bool] = ..., want_hvp: _Optional[bool] = ..., has_w: _Optional[bool] = ..., step: _Optional[float] = ..., chunk: _Optional[_Union[VectorChunk, _Mapping]] = ..., full_precision: _Optional[bool] = ..., dropped_peers: _Optional[_Iterable[str]] = ..., validate: _Optional[bool] = ..., commit: _Optional[bool] = ..., commit_coefficients: _Optional[_Iterable[float]] = ..., commit_memory: _Optional[int] = ..., has_direction: _Optional[bool] = ...) -> None: ...

class EvaluateReply(_message.Message):
    __slots__ = ("loss_sum", "rows", "chunk", "validation_loss_sum", "validation_rows", "validation_histogram", "gradient_delta", "derivative_sums")
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_ROWS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_DELTA_FIELD_NUMBER: _ClassVar[int]
    DERIVATIVE_SUMS_FIELD_NUMBER: _ClassVar[int]
    loss_sum: float
    rows: int
    chunk: VectorChunk
    validation_loss_sum: float
    validation_rows: int
    validation_histogram: _containers.RepeatedScalarFieldContainer[int]
    gradient_delta: bool
    derivative_sums: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, loss_sum: _Optional[float] = ..., rows: _Optional[int] = ..., chunk: _Optional[_Union[VectorChunk, _Mapping]] = ..., validation_loss_sum: _Optional[float] = ..., validation_rows: _Optional[int] = ..., validation_histogram: _Optional[_Iterable[int]] = ..., gradient_delta: _Optional[bool] = ..., derivative_sums: _Optional[_Iterable[float]] = ...) -> None: ...

class LineSearchRequest(_message.Message):
    __slots__ = ("session", "round", "step_sizes", "chunk", "dropped_peers")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STEP_SIZES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PEERS_FIELD_NUMBER: _ClassVar[int]
    session: str
    round: int
    step_sizes: _containers.RepeatedScalarFieldContainer[float]
    chunk: VectorChunk
    dropped_peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session: _Optional[str] = ..., round: _Optional[int] = ..., step_sizes: _Optional[_Iterable[float]] = ..., chunk: _Optional[_Union[VectorChunk, _Mapping]] = ..., dropped_peers: _Optional[_Iterable[str]] = ...) -> None: ...

class LineSearchReply(_message.Message):
    __slots__ = ("loss_sums", "derivative_sums", "rows", "masked")
    LOSS_SUMS_FIELD_NUMBER: _ClassVar[int]
    DERIVATIVE_SUMS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    loss_sums: _containers.RepeatedScalarFieldContainer[float]
    derivative_sums: _containers.RepeatedScalarFieldContainer[float]
    rows: int
    masked: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, loss_sums: _Optional[_Iterable[float]] = ..., derivative_sums: _Optional[_Iterable[float]] = ..., rows: _Optional[int] = ..., masked: _Optional[_Iterable[int]] = ...) -> None: ...

class LocalSolveRequest(_message.Message):
    __slots__ = ("session", "round", "procedure", "params_json", "chunk", "dropped_peers")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PROCEDURE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PEERS_FIELD_NUMBER: _ClassVar[int]
    session: str
    round: int
    procedure: str
    params_json: str
    chunk: VectorChunk
    dropped_peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session: _Optional[str] = ..., round: _Optional[int] = ..., procedure: _Optional[str] = ..., params_json: _Optional[str] = ..., chunk: _Optional[_Union[VectorChunk, _Mapping]] = ..., dropped_peers: _Optional[_Iterable[str]] = ...) -> None: ...

class LocalSolveReply(_message.Message):
    __slots__ = ("rows", "info_json", "chunk")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    rows: int
    info_json: str
    chunk: VectorChunk
    def __init__(self, rows: _Optional[int] = ..., info_json: _Optional[str] = ..., chunk: _Optional[_Union[VectorChunk, _Mapping]] = ...) -> None: ...

class SubspaceRequest(_message.Message):
    __slots__ = ("session", "round", "new_directions", "add_last_local_input", "coefficients", "commit", "memory", "chunk", "dropped_peers")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NEW_DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    ADD_LAST_LOCAL_INPUT_FIELD_NUMBER: _ClassVar[int]
    COEFFICIENTS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PEERS_FIELD_NUMBER: _ClassVar[int]
    session: str
    round: int
    new_directions: int
    add_last_local_input: bool
    coefficients: _containers.RepeatedScalarFieldContainer[float]
    commit: bool
    memory: int
    chunk: VectorChunk
    dropped_peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session: _Optional[str] = ..., round: _Optional[int] = ..., new_directions: _Optional[int] = ..., add_last_local_input: _Optional[bool] = ..., coefficients: _Optional[_Iterable[float]] = ..., commit: _Optional[bool] = ..., memory: _Optional[int] = ..., chunk: _Optional[_Union[VectorChunk, _Mapping]] = ..., dropped_peers: _Optional[_Iterable[str]] = ...) -> None: ...

class SubspaceReply(_message.Message):
    __slots__ = ("loss_sum", "gradient", "hessian", "directions", "rows", "masked")
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    HESSIAN_FIELD_NUMBER: _ClassVar[int]
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    loss_sum: float
    gradient: _containers.RepeatedScalarFieldContainer[float]
    hessian: _containers.RepeatedScalarFieldContainer[float]
    directions: int
    rows: int
    masked: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, loss_sum: _Optional[float] = ..., gradient: _Optional[_Iterable[float]] = ..., hessian: _Optional[_Iterable[float]] = ..., directions: _Optional[int] = ..., rows: _Optional[int] = ..., masked: _Optional[_Iterable[int]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("session", "max_chunk_bytes")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    session: str
    max_chunk_bytes: int
    def __init__(self, session: _Optional[str] = ..., max_chunk_bytes: _Optional[int] = ...) -> None: ...

class ExportReply(_message.Message):
    __slots__ = ("rows", "arrow_ipc")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    rows: int
    arrow_ipc: bytes
    def __init__(self, rows: _Optional[int] = ..., arrow_ipc: _Optional[bytes] = ...) -> None: ...

class CloseRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: _Optional[str] = ...) -> None: ...

class CloseReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
