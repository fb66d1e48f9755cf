"""The one exception tree of Lepton.

Every error Lepton raises on purpose is a :class:`LeptonError`. Each class carries a
stable machine-readable ``code`` (used for HTTP error bodies and CLI exit messages) and
its message always says what to do next::

    LeptonError
    ├── ConfigError                 bad settings or environment
    │   └── MissingExtraError       an optional dependency is not installed
    ├── DataError                   anything about datasets
    │   ├── DatasetNotFoundError    unknown catalog name
    │   ├── DataSourceMissingError  the files for a known dataset are not on this machine
    │   ├── ChecksumError           a file does not match its recorded hash
    │   ├── DataFormatError         a file could not be parsed
    │   │   └── InvalidRowsError    bad rows of a table, each with its line number
    │   ├── EmptyDatasetError       zero rows where rows are required
    │   └── LabelError              labels of the wrong type or range
    ├── ModelError                  anything about building or using models
    │   ├── UnknownModelError       unknown architecture name or bad config
    │   ├── ShapeError              input of the wrong shape for the model
    │   ├── NotFittedError          an estimator used before ``fit``
    │   ├── ExplainError            an explanation cannot be computed as asked
    │   ├── GenerationError         text sampling settings out of range
    │   └── CompressionError        a model cannot be exported, quantized, pruned or distilled
    │       └── ParityError         a compressed model's answers drift past the tolerance
    ├── TrainingError               anything about ``fit`` / ``evaluate``
    │   ├── DivergedError           the loss became NaN or infinite
    │   ├── CheckpointError         a checkpoint is missing, corrupt or incompatible
    │   └── DistributedError        data-parallel training cannot start or run as asked
    │       ├── WorkerFailedError   a worker process raised or died (the others were stopped)
    │       └── RendezvousError     the workers could not meet (address, world size, timeout)
    │           └── PortInUseError  the rendezvous port is taken by another process
    ├── TrackingError               a run or metric cannot be logged or found
    │   └── RunNotFoundError        no run with that id
    ├── TuneError                   a tuning study or AutoML search cannot run as asked
    │   ├── SearchSpaceError        a malformed search space
    │   └── StudyNotFoundError      no study has that name
    ├── PrivacyError                a DP release or a privacy budget cannot be used as asked
    │   ├── NoBudgetError           the dataset has no privacy budget set
    │   └── BudgetExceededError     a release would spend more than the budget left
    ├── RecommendError              a recommender cannot be fitted or asked as requested
    │   └── UnknownIdError          a user or item id the recommender has never seen
    ├── GraphError                  a knowledge graph cannot be opened, loaded or asked
    │   ├── GraphNotFoundError      no graph has that name
    │   ├── GraphReadOnlyError      a write to a graph opened read-only
    │   ├── SparqlError             a SPARQL query or update that cannot run (syntax, SERVICE)
    │   └── QueryLimitError         a query past its time or result-size limit
    ├── TextError                   a text model, index or assistant cannot be used as asked
    ├── MonitorError                drift or anomaly detection cannot run as asked
    │   ├── SchemaMismatchError     reference and current data have different columns
    │   ├── NotEnoughDataError      too few rows (or none) to compare or score
    │   └── UnknownMethodError      a drift test or detector name that does not exist
    ├── FederatedError              a federated run cannot be made or its federation failed
    │   ├── FederationTimeoutError  the federation did not finish in time
    │   └── InsecureFederationError plain gRPC asked for off loopback (TLS is required there)
    ├── RegistryError               a model version cannot be registered or found
    │   ├── ModelNotFoundError      no model or ready version matches the reference
    │   └── UnsafeFormatError       a pickle-based file (never loaded)
    ├── ServingError                an HTTP service cannot answer (carries ``status``)
    │   ├── RequestError            a request the handler cannot use (400/422)
    │   │   └── InvalidBodyError    a body that does not fit the route's schema (422)
    │   ├── UnauthorizedError       no or a wrong bearer token (401)
    │   ├── MethodNotAllowedError   a path that does not take this method (405)
    │   ├── PayloadTooLargeError    a body over the service's limit (413)
    │   ├── OverloadedError         the queue is full or the service drains (503)
    │   └── DeadlineExceededError   not answered within the deadline (504)
    ├── PlatformError               the platform server refused a request (carries ``status``)
    │   ├── NotFoundError           no such job, deployment, user or token (404)
    │   │   └── NoAutoscalePolicyError  the deployment has no autoscaling policy (404)
    │   ├── ForbiddenError          the caller's role does not allow it (403)
    │   ├── ConflictError           the record's state forbids it (409)
    │   │   └── ServerBusyError     another server already manages this database
    │   ├── JobError                an invalid job spec, or a job that cannot run (400)
    │   ├── QuotaExceededError      too many jobs queued; wait or cancel some (429)
    │   └── DeploymentError         a deployment cannot be created, reached or changed
    └── StorageError                anything about stored artifacts
        ├── InvalidKeyError         an artifact key that could leave the store
        ├── ArtifactNotFoundError   no artifact under that key
        ├── IntegrityError          stored bytes no longer match their hash
        ├── EncryptionError         a missing or wrong encryption key
        └── DatabaseError           the metadata database cannot be used
            └── StaleSchemaError    its schema is not the one this Lepton needs
"""

from __future__ import annotations

from typing import Any

# The exception tree (``lp.errors``). How an error travels over HTTP (its JSON body,
# the status-to-class map of the clients) is in ``lepton._wire``.
__all__ = [
    "AlertRuleError",
    "AnnotationError",
    "ArtifactNotFoundError",
    "BudgetExceededError",
    "CheckpointError",
    "ChecksumError",
    "CompressionError",
    "ConfigError",
    "ConflictError",
    "DataError",
    "DataFormatError",
    "DataSourceMissingError",
    "DatabaseError",
    "DatasetNotFoundError",
    "DeadlineExceededError",
    "DeploymentError",
    "DistributedError",
    "DivergedError",
    "EmptyDatasetError",
    "EncryptionError",
    "ExplainError",
    "FederatedError",
    "FederationTimeoutError",
    "ForbiddenError",
    "GenerationError",
    "GraphError",
    "GraphNotFoundError",
    "GraphReadOnlyError",
    "InsecureFederationError",
    "IntegrityError",
    "InvalidBodyError",
    "InvalidKeyError",
    "InvalidRowsError",
    "JobError",
    "LabelError",
    "LeptonError",
    "MethodNotAllowedError",
    "MissingExtraError",
    "ModelError",
    "ModelNotFoundError",
    "MonitorError",
    "NoAutoscalePolicyError",
    "NoBudgetError",
    "NotEnoughDataError",
    "NotFittedError",
    "NotFoundError",
    "OverloadedError",
    "ParityError",
    "PayloadTooLargeError",
    "PlatformError",
    "PortInUseError",
    "PrivacyError",
    "PrivateTrainingError",
    "QueryLimitError",
    "QuotaExceededError",
    "RecommendError",
    "RegistryError",
    "RendezvousError",
    "RequestError",
    "RunNotFoundError",
    "SchemaMismatchError",
    "SearchSpaceError",
    "ServerBusyError",
    "ServingError",
    "ShapeError",
    "SparqlError",
    "StaleSchemaError",
    "StorageError",
    "StudyNotFoundError",
    "TextError",
    "TrackingError",
    "TrainingError",
    "TuneError",
    "UnauthorizedError",
    "UnknownIdError",
    "UnknownMethodError",
    "UnknownModelError",
    "UnsafeFormatError",
    "VisionDependencyError",
    "VisionError",
    "WorkerFailedError",
]


class LeptonError(Exception):
    """Root of every error Lepton raises on purpose.

    Attributes:
        code: A stable, snake_case identifier for the kind of error (for HTTP and logs).
        message: The human-readable message, which says how to fix the problem.
    """

    code = "lepton_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(LeptonError):
    """A setting or environment variable is invalid."""

    code = "config_error"


class DataError(LeptonError):
    """A dataset could not be found, read, or used."""

    code = "data_error"


class DatasetNotFoundError(DataError):
    """A dataset name is not in the catalog."""

    code = "dataset_not_found"


class DataSourceMissingError(DataError):
    """A known dataset's files are not on this machine."""

    code = "data_source_missing"


class ChecksumError(DataError):
    """A data file does not match the checksum recorded for it."""

    code = "checksum_mismatch"


class DataFormatError(DataError):
    """A data file or array could not be parsed or has an unusable layout."""

    code = "data_format"


class EmptyDatasetError(DataError):
    """A dataset has no rows where rows are required."""

    code = "empty_dataset"


class LabelError(DataError):
    """Labels have the wrong type, shape or range for the task."""

    code = "invalid_labels"


class InvalidRowsError(DataFormatError):
    """Rows of an uploaded or registered table that cannot be used (wrong number of
    fields, a value that is not a number, a missing target); ``problems`` lists every one
    with its line (CSV) or row (Parquet) number, and nothing was stored."""

    code = "invalid_rows"

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class ModelError(LeptonError):
    """A model could not be built or used."""

    code = "model_error"


class UnknownModelError(ModelError):
    """An architecture name is not known, or its config is invalid."""

    code = "unknown_model"


class ShapeError(ModelError):
    """An input does not have the shape a model expects."""

    code = "invalid_shape"


class NotFittedError(ModelError):
    """An estimator was used before ``fit`` was called."""

    code = "not_fitted"


class ExplainError(ModelError):
    """An explanation cannot be computed as asked: an unknown method, a target class out of
    range, no layer for the method, or a model that the method cannot differentiate."""

    code = "explain_error"


class GenerationError(ModelError):
    """A language model cannot sample as asked: a temperature, ``top_k``, ``top_p`` or
    token count out of its range."""

    code = "generation_error"


class CompressionError(ModelError):
    """A model cannot be exported, quantized, pruned or distilled as asked: an unknown
    method, an amount out of range, or an architecture the step does not support."""

    code = "compression_error"


class ParityError(CompressionError):
    """A compressed or exported model disagrees with its original by more than the
    tolerance on real inputs."""

    code = "parity_error"


class TrainingError(LeptonError):
    """Training or evaluation could not proceed."""

    code = "training_error"


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""

    code = "diverged"


class CheckpointError(TrainingError):
    """A checkpoint is missing, corrupt, or does not match the model."""

    code = "checkpoint_error"


class DistributedError(TrainingError):
    """Data-parallel training (``fit(workers=N)``, ``torchrun``, ``lepton launch``) cannot
    start or run as asked: a batch size that does not split over the workers, a worker
    count that differs from the launcher's, something that cannot be sent to a worker."""

    code = "distributed_error"


class WorkerFailedError(DistributedError):
    """A worker process of a data-parallel run raised or died; the other workers were
    stopped. The message names the rank and carries its error."""

    code = "worker_failed"


class RendezvousError(DistributedError):
    """The workers of a data-parallel run could not meet: an unreachable rendezvous
    address, fewer workers than the world size within the timeout."""

    code = "rendezvous_failed"


class PortInUseError(RendezvousError):
    """The rendezvous port of a data-parallel run is taken by another process."""

    code = "port_in_use"


class ServingError(LeptonError):
    """An HTTP service could not answer a request.

    Attributes:
        status: The HTTP status the service answers with.
        retry_after: Seconds a client should wait before retrying, when retrying helps.

    ``status`` and ``code`` may be given for one answer that has no class of its own
    (e.g. ``ServingError("no route /x", status=404, code="not_found")``).
    """

    code = "serving_error"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class RequestError(ServingError):
    """A request's body or parameters cannot be used; raise it from a handler to reject one."""

    code = "bad_request"
    status = 400


class InvalidBodyError(RequestError):
    """A request body that does not fit the route's schema.

    Attributes:
        details: One ``{"loc", "msg"}`` entry per problem, for the error body.
    """

    code = "validation_error"
    status = 422

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class MethodNotAllowedError(ServingError):
    """The path exists but does not take this HTTP method."""

    code = "method_not_allowed"
    status = 405


class UnauthorizedError(ServingError):
    """The request has no bearer token, or a wrong one."""

    code = "unauthorized"
    status = 401


class PayloadTooLargeError(ServingError):
    """The request body is larger than the service accepts."""

    code = "payload_too_large"
    status = 413


class OverloadedError(ServingError):
    """The service's queue is full, or it is draining; retry after ``retry_after``."""

    code = "overloaded"
    status = 503


class DeadlineExceededError(ServingError):
    """The request was not answered within its deadline."""

    code = "deadline_exceeded"
    status = 504


class PlatformError(LeptonError):
    """The platform server (``lepton server``) refused or could not do a request.

    Attributes:
        status: The HTTP status the server answers with.
    """

    code = "platform_error"
    status = 400


class NotFoundError(PlatformError):
    """The job, deployment, user, token or other record does not exist."""

    code = "not_found"
    status = 404


class NoAutoscalePolicyError(NotFoundError):
    """The deployment exists but has no autoscaling policy (set one with ``PUT
    /api/v1/deployments/NAME/autoscale`` or ``lepton deployments autoscale``)."""

    code = "no_autoscale_policy"


class ForbiddenError(PlatformError):
    """The caller's role does not allow this action."""

    code = "forbidden"
    status = 403


class ConflictError(PlatformError):
    """The action conflicts with the record's state (a name taken, a job already ended)."""

    code = "conflict"
    status = 409


class ServerBusyError(ConflictError):
    """Another running server already manages this database's jobs and deployments."""

    code = "server_busy"


class AlertRuleError(PlatformError):
    """An alert rule is inconsistent (a metric rule without a known metric); the message
    says which field to fix."""

    code = "alert_rule_error"
    status = 400


class JobError(PlatformError):
    """A job spec is invalid, or a job could not be run."""

    code = "job_error"
    status = 400


class QuotaExceededError(PlatformError):
    """A bound on queued work is reached (jobs per user, jobs in all); retry after
    ``retry_after`` seconds, or cancel queued work.

    Attributes:
        retry_after: Seconds a client should wait before it submits again.
    """

    code = "quota_exceeded"
    status = 429

    def __init__(self, message: str, *, retry_after: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeploymentError(PlatformError):
    """A deployment could not be created, scaled, reached or stopped."""

    code = "deployment_error"
    status = 400


class StorageError(LeptonError):
    """An artifact could not be stored or read."""

    code = "storage_error"


class InvalidKeyError(StorageError):
    """An artifact key is malformed or could name a path outside the store."""

    code = "invalid_key"


class ArtifactNotFoundError(StorageError):
    """No artifact is stored under a key."""

    code = "artifact_not_found"


class IntegrityError(StorageError):
    """Stored bytes do not match the hash recorded for them."""

    code = "integrity_error"


class EncryptionError(StorageError):
    """An encrypted artifact cannot be read: the key is missing or wrong."""

    code = "encryption_error"


class DatabaseError(StorageError):
    """The metadata database cannot be reached or used."""

    code = "database_error"


class StaleSchemaError(DatabaseError):
    """The database schema is older (or newer) than this Lepton needs."""

    code = "stale_schema"


class TrackingError(LeptonError):
    """A run cannot be logged to, or found."""

    code = "tracking_error"


class RunNotFoundError(TrackingError):
    """No tracked run has this id."""

    code = "run_not_found"


class RegistryError(LeptonError):
    """A model version cannot be registered, found or changed."""

    code = "registry_error"


class ModelNotFoundError(RegistryError):
    """No registered model or ready version matches the name or reference."""

    code = "model_not_found"


class UnsafeFormatError(RegistryError):
    """A file format that can execute code when loaded (pickle) was refused."""

    code = "unsafe_format"


class MissingExtraError(ConfigError):
    """An optional dependency is not installed; the message names the extra to install."""

    code = "missing_extra"


class TuneError(LeptonError):
    """A tuning study or an AutoML search cannot run as asked."""

    code = "tune_error"


class SearchSpaceError(TuneError):
    """A search space is malformed (bad bounds, names, types or conditions)."""

    code = "search_space"


class StudyNotFoundError(TuneError):
    """No tuning study has that name."""

    code = "study_not_found"


class PrivacyError(LeptonError):
    """A differentially private release or a privacy budget cannot be used as asked
    (undeclared bounds, an event the ledger cannot account for, a bad epsilon)."""

    code = "privacy_error"


class NoBudgetError(PrivacyError):
    """The dataset has no privacy budget: set one with ``lp.privacy.set_budget``."""

    code = "no_privacy_budget"


class BudgetExceededError(PrivacyError):
    """A release would spend more of a dataset's privacy budget than is left; nothing
    was released and nothing was charged."""

    code = "budget_exceeded"


class PrivateTrainingError(PrivacyError):
    """A DP-SGD run cannot be made as asked: an option that breaks per-sample clipping
    (mixed precision, global gradient clipping, checkpoint resume), or a model Opacus
    cannot compute per-sample gradients for."""

    code = "private_training"


class FederatedError(LeptonError):
    """A federated run cannot be made as asked (bad partitioning, a model the client
    processes cannot rebuild, a federation whose processes failed or timed out)."""

    code = "federated_error"


class FederationTimeoutError(FederatedError):
    """A federated run did not finish in time: too few clients stayed connected, or the
    SuperLink stopped answering."""

    code = "federation_timeout"


class InsecureFederationError(FederatedError):
    """A federation asked to listen off loopback without TLS: its SuperLink would carry
    model weights and node credentials in clear text to anyone on the network."""

    code = "insecure_federation"


# -- recommender (lepton.recommend) --------------------------------------------------


class RecommendError(LeptonError):
    """A recommender cannot be fitted or asked as requested (bad ratings table, a model
    used before ``fit``, options that do not fit the model's kind)."""

    code = "recommend_error"


class UnknownIdError(RecommendError):
    """A user or item id the recommender has never seen, where it needs a known one
    (``similar_items`` of an unknown item); ``partial_fit`` adds new ids."""

    code = "unknown_id"


# -- knowledge graph (lepton.graph) --------------------------------------------------


class GraphError(LeptonError):
    """A knowledge graph cannot be opened, loaded or asked as requested (a bad name, a file
    that is not RDF, a CSV without head/relation/tail columns, an embedding model asked
    about an entity it has never seen)."""

    code = "graph_error"


class GraphNotFoundError(GraphError):
    """No graph has that name under ``LEPTON_HOME/graphs``; ``lp.graph.list_graphs()``
    names those there, ``lp.graph.create(name)`` makes one."""

    code = "graph_not_found"


class GraphReadOnlyError(GraphError):
    """A write (``update``, ``load``, ``materialize``) to a graph opened read-only; open it
    with ``read_only=False`` to change it."""

    code = "graph_read_only"


class SparqlError(GraphError):
    """A SPARQL query or update that cannot run: a syntax error, an update sent to
    ``query`` (or the reverse), or a ``SERVICE`` clause (federation to other hosts is
    refused)."""

    code = "sparql_error"


class QueryLimitError(GraphError):
    """A SPARQL query ran past its time limit or its result-size limit; narrow it
    (``LIMIT``, a more specific pattern) or raise ``timeout=`` / ``max_rows=``."""

    code = "query_limit"


# -- language (lepton.text) ------------------------------------------------------------


class TextError(LeptonError):
    """A text model, search index or assistant cannot be used as asked: texts that are not
    strings, vectors of the wrong width, an unknown encoder, a corrupt saved folder."""

    code = "text_error"


# -- vision (lepton.vision) ------------------------------------------------------------


class VisionError(LeptonError):
    """Images, boxes or a vision model cannot be used as asked: a scene size too small for
    its digits, boxes that are not ``(k, 4)`` ``x1 < x2, y1 < y2``, a detector asked to
    predict before it was trained, an option outside its range."""

    code = "vision_error"


class AnnotationError(VisionError):
    """A COCO-format annotation file cannot be read: not JSON, no ``images`` /
    ``annotations`` / ``categories`` lists, an annotation naming an unknown image or
    category, a bounding box that is not ``[x, y, width, height]`` with positive sizes, or
    an image file missing from the images folder."""

    code = "bad_annotations"


class VisionDependencyError(VisionError):
    """An optional package of ``lepton.vision`` is missing or unusable (torchvision built
    for another torch, no COCO evaluator); the message names what to install."""

    code = "vision_dependency"


# -- monitoring (lepton.monitor) -----------------------------------------------------


class MonitorError(LeptonError):
    """Drift or anomaly detection cannot run as asked: an option out of range, a batch
    detector asked to stream (or the reverse), data of the wrong shape."""

    code = "monitor_error"


class SchemaMismatchError(MonitorError):
    """The reference and the current data do not have the same columns (names, count or
    sample shape); compare data of one layout, or pass ``features=`` to pick columns."""

    code = "schema_mismatch"


class NotEnoughDataError(MonitorError):
    """Too few rows to compare or score (an empty window, a reference of one row, a series
    shorter than the subsequence length); collect more data first."""

    code = "not_enough_data"


class UnknownMethodError(MonitorError):
    """A drift test or anomaly detector name that does not exist; the message lists the
    known ones."""

    code = "unknown_method"
