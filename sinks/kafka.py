"""``KafkaSink``: one message per trace on a Kafka topic, produced with aiokafka.

The producer lives on the export worker's event loop: it is created inside the first ``export``
call (so it binds to that loop), re-created after a failed start or repeated failed sends, and
dropped without closing in a forked child (its sockets and loop belong to the parent).

Delivery: the records of a batch are grouped by partition (murmur2 of the key, the Java
client's default partitioner) and packed into record batches with aiokafka's batch API — one
future per record batch, not per message — which are sent at once, then the sink waits for all
acknowledgements under its own deadline (shorter than the pipeline's).  A record that can never
be sent (too large) is counted and the batch goes on; a record batch the broker refuses for a
record-level reason is resent one record per batch to single out the bad one.  Any other failure
raises, so the pipeline retries the batch with backoff.  On that retry — the pipeline hands back
the very same batch object — records already acknowledged are skipped and sends still in flight
are awaited, not repeated, so a partial failure does not duplicate the delivered part.
Idempotent production is never enabled: its sends never expire (a dead broker would hang
shutdown) and tansu, the test broker, does not implement it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import struct
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sinks.base import Sink
from tracewire.record import SCHEMA_VERSION

if TYPE_CHECKING:
    import ssl

    from tracewire.config import Settings
    from tracewire.record import TraceRecord

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_SIZE = 1048576  # Kafka's default message cap, = TRACING_MAX_TRACE_BYTES default
_RECREATE_AFTER = 3  # consecutive failed exports before the producer is thrown away
_CLOSE_TIMEOUT = 0.4  # under the 0.5 s the pipeline grants aclose() at a late shutdown
_WARN_EVERY = 30.0
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
_FIXED_HEADERS = (("content-type", b"application/json"), ("tracewire-schema", SCHEMA_VERSION.encode()))
# Record framing beyond key, value and header bytes: varints, attributes, batch header (61 bytes).
_FRAMING = 128
_HEADER_ROOM = 4096  # below this distance from the cap no header arithmetic is needed
_PARTITION_CACHE_SIZE = 100_000  # session id -> partition
_M = 0x5BD1E995
_COMPRESSIONS = ("gzip", "snappy", "lz4", "zstd")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def _zstd_available() -> bool:
    try:
        from aiokafka.codec import has_zstd
    except ImportError:
        return False
    return bool(has_zstd())


class _InFlight:
    """Delivery state of the batch being exported, kept across the pipeline's retries of it.

    Record indices move from ``pending`` (per partition, still to send) to ``sending`` (one
    future per record batch handed to the producer) to ``delivered`` or ``rejected``; a failed
    send puts its indices back in ``pending``, so a retry sends exactly what is not yet acked.
    """

    __slots__ = ("batch", "delivered", "pending", "rejected", "sending", "split")

    def __init__(self, batch: Sequence[TraceRecord]) -> None:
        self.batch = batch
        self.pending: dict[int, list[int]] | None = None  # partition -> indices, once known
        self.sending: list[tuple[int, list[int], asyncio.Future[Any]]] = []
        self.delivered = 0
        self.rejected: set[int] = set()
        self.split: set[int] = set()  # partitions whose records now go one per batch


class KafkaSink(Sink):
    """Produce each trace as one message: value = trace JSON, key = trace id (or session id).

    ``send_timeout`` (seconds) bounds one ``export`` call; keep it below the pipeline's
    ``export_timeout``.  ``request_timeout_ms`` (aiokafka's produce timeout and the age at which
    an undeliverable message fails) defaults to 60% of it, so acknowledgements never linger
    past the deadline.
    """

    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topic: str,
        *,
        key_by: str = "trace_id",
        compression_type: str | None = "auto",
        linger_ms: int = 5,
        max_batch_size: int = 1048576,
        acks: int | str = "all",
        request_timeout_ms: int | None = None,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        send_timeout: float = 8.0,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str = "PLAIN",
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_password: str | None = None,
        create_topic: bool = True,
        num_partitions: int = 6,
        replication_factor: int | None = None,
        client_id: str = "tracewire",
    ) -> None:
        servers = [bootstrap_servers] if isinstance(bootstrap_servers, str) else list(bootstrap_servers)
        servers = [s.strip() for part in servers for s in part.split(",") if s.strip()]
        if not servers:
            raise ValueError("KafkaSink needs at least one bootstrap server (host:port)")
        if not _TOPIC_RE.fullmatch(topic or ""):
            raise ValueError(f"invalid Kafka topic name {topic!r}: use 1-249 of [A-Za-z0-9._-]")
        if key_by not in ("trace_id", "session_id"):
            raise ValueError(f"key_by must be 'trace_id' or 'session_id', got {key_by!r}")
        if compression_type == "auto":
            # zstd was the fastest codec measured (README, "Kafka"); aiokafka needs cramjam for it.
            compression_type = "zstd" if _zstd_available() else None
        elif compression_type in ("none", ""):
            compression_type = None
        if compression_type is not None and compression_type not in _COMPRESSIONS:
            raise ValueError(f"compression_type must be one of none, {', '.join(_COMPRESSIONS)}, auto")
        if str(acks) not in ("0", "1", "all", "-1"):
            raise ValueError(f"acks must be 0, 1 or 'all', got {acks!r}")
        if security_protocol not in _SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol must be one of {', '.join(_SECURITY_PROTOCOLS)}")
        if sasl_mechanism not in _SASL_MECHANISMS:
            raise ValueError(f"sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}")
        for label, number in (("linger_ms", linger_ms), ("max_batch_size", max_batch_size),
                              ("max_request_size", max_request_size), ("num_partitions", num_partitions)):
            if not isinstance(number, int) or number < (0 if label == "linger_ms" else 1):
                raise ValueError(f"{label} must be a positive integer, got {number!r}")
        if not send_timeout > 0:
            raise ValueError(f"send_timeout must be > 0 seconds, got {send_timeout!r}")
        if request_timeout_ms is None:
            request_timeout_ms = max(int(send_timeout * 600), 100)
        self.bootstrap_servers = servers
        self.topic = topic
        self.key_by = key_by
        self.compression_type = compression_type
        self.max_request_size = max_request_size
        self.send_timeout = float(send_timeout)
        self.create_topic = create_topic
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        self.name = f"kafka:{topic}"
        if ssl_context is None and (ssl_cafile or ssl_certfile) and security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            ssl_context = create_ssl_context(
                cafile=ssl_cafile, certfile=ssl_certfile, keyfile=ssl_keyfile, password=ssl_password
            )
        self._client_options: dict[str, Any] = {
            "bootstrap_servers": servers, "client_id": client_id,
            "request_timeout_ms": request_timeout_ms, "security_protocol": security_protocol,
            "ssl_context": ssl_context, "sasl_mechanism": sasl_mechanism,
            "sasl_plain_username": sasl_plain_username, "sasl_plain_password": sasl_plain_password,
        }
        self._producer_options: dict[str, Any] = {
            "acks": "all" if str(acks) in ("all", "-1") else int(acks),
            "compression_type": compression_type, "linger_ms": linger_ms,
            "max_batch_size": max_batch_size, "max_request_size": max_request_size,
            "enable_idempotence": False,
        }
        self._producer: Any = None
        self._topic_ready = not create_topic
        self._create_warned = False
        self._inflight: _InFlight | None = None
        self._partition_cache: dict[str | None, int] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._failures = 0
        self._last_warning = -_WARN_EVERY

    # -- construction from TRACING_DESTINATION ------------------------------------------------------
    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> KafkaSink:
        """``kafka://host:port[,host:port]/topic``; producer options from ``TRACING_KAFKA_*``."""
        servers, topic = parse_uri(uri)
        options = _options_from_extra(settings.extra)
        # Our own deadline sits inside the pipeline's so a failed send raises here, cleanly.
        options.setdefault("send_timeout", max(settings.export_timeout * 0.8, 0.05))
        if "max_request_size" not in options:
            # A user who raises TRACING_MAX_TRACE_BYTES wants bigger messages: follow it (the
            # broker's / topic's max.message.bytes must allow them too).
            options["max_request_size"] = max(DEFAULT_MAX_REQUEST_SIZE, settings.max_trace_bytes)
        elif options["max_request_size"] < settings.max_trace_bytes:
            logger.warning(
                "tracewire: TRACING_KAFKA_MAX_REQUEST_SIZE=%d is below TRACING_MAX_TRACE_BYTES=%d; "
                "traces truncated to the latter may be rejected by the producer",
                options["max_request_size"], settings.max_trace_bytes,
            )
        # A bad env value must not cost the destination: drop it (logged) and keep its default.
        for name in list(options):
            try:
                cls(servers, topic, **{name: options[name]})
            except ValueError as exc:
                logger.warning("tracewire: ignoring TRACING_KAFKA_%s=%r (%s)",
                               name.upper(), options[name], exc)
                del options[name]
        return cls(servers, topic, **options)

    # -- export -----------------------------------------------------------------------------------
    async def export(self, batch: Sequence[TraceRecord]) -> int:
        if not batch:
            return 0
        state = self._inflight
        if state is None or state.batch is not batch:
            state = self._inflight = _InFlight(batch)
        try:
            await asyncio.wait_for(self._deliver(state), self.send_timeout)
        except asyncio.TimeoutError:
            await self._failed()
            raise TimeoutError(
                f"Kafka did not acknowledge {len(batch) - state.delivered - len(state.rejected)} "
                f"of {len(batch)} "
                f"traces within {self.send_timeout:.1f}s"
            ) from None
        except Exception:
            await self._failed()
            raise
        self._failures = 0
        self._inflight = None
        return len(state.rejected)

    async def _deliver(self, state: _InFlight) -> None:
        producer = await self._ensure_producer()
        if state.pending is None:
            partitions = sorted(await producer.partitions_for(self.topic))
            state.pending = self._assign(state.batch, partitions)
        else:
            self._harvest(state)  # settle what the last attempt left in flight; failures are pending
        while True:
            built: list[tuple[int, list[int], Any, asyncio.Future[Any] | None]] = []
            handed = 0
            try:
                for partition, indices in list(state.pending.items()):
                    while indices:
                        builder, taken = self._fill(producer, state, indices, partition in state.split)
                        if taken:
                            built.append((partition, indices[:taken], builder, self._prebuild(builder)))
                            del indices[:taken]
                    del state.pending[partition]
                for partition, chunk, builder, compressing in built:
                    if compressing is not None:
                        await compressing
                    future = await producer.send_batch(builder, self.topic, partition=partition)
                    future.add_done_callback(_consume_exception)
                    state.sending.append((partition, chunk, future))
                    handed += 1
            except BaseException:
                for partition, chunk, _, _ in built[handed:]:  # never handed over: send again later
                    state.pending.setdefault(partition, []).extend(chunk)
                raise
            if state.sending:  # this attempt's sends, and any the last attempt left in flight
                # asyncio.wait, not gather: a deadline must leave the sends in flight, not cancel them.
                await asyncio.wait([future for _, _, future in state.sending])
            error = self._harvest(state)
            if error is not None:
                raise error
            if not state.pending:
                return
            # Left pending now: the records of a batch the broker refused; they go one by one.

    def _assign(self, batch: Sequence[TraceRecord], partitions: list[int]) -> dict[int, list[int]]:
        """Partition of each record: murmur2 of its key, as Kafka's Java default partitioner."""
        pending: dict[int, list[int]] = {}
        count = len(partitions)
        cache = self._partition_cache
        if cache.get(None) != count:  # the topic grew: every key moves
            cache.clear()
            cache[None] = count
        by_session = self.key_by == "session_id"
        for index, record in enumerate(batch):
            key = record.session_id if by_session and record.session_id else record.trace_id
            slot = cache.get(key)
            if slot is None:
                slot = (murmur2(key.encode()) & 0x7FFFFFFF) % count
                if by_session and len(cache) < _PARTITION_CACHE_SIZE:
                    cache[key] = slot
            pending.setdefault(partitions[slot], []).append(index)
        return pending

    def _fill(self, producer: Any, state: _InFlight, indices: list[int], single: bool) -> tuple[Any, int]:
        """A closed record batch of the leading ``indices`` (as many as fit); how many it took.

        A record that can never be sent (over ``max_request_size``) is rejected and removed."""
        builder = producer.create_batch()
        taken = 0
        while taken < len(indices) and not (single and taken):
            index = indices[taken]
            record = state.batch[index]
            key, headers = self._key_and_headers(record)
            size = len(record.payload) + len(key) + _FRAMING + sum(len(k) + len(v) for k, v in headers)
            if size <= self.max_request_size:
                if builder.append(timestamp=None, key=key, value=record.payload, headers=headers) is not None:
                    taken += 1
                    continue
                if taken:
                    break  # full: the rest goes in the next batch
            del indices[taken]
            state.rejected.add(index)
            self._warn("rejected trace %s (%d bytes): over max_request_size=%d",
                       record.trace_id, record.size, self.max_request_size)
        builder.close()  # closed: sent at once, without lingering
        return builder, taken

    def _prebuild(self, builder: Any) -> asyncio.Future[Any] | None:
        """Encode and compress the record batch on the sink's thread, off the event loop.

        The codecs release the GIL, so compression runs on another core while the worker goes
        on serializing (and the app's threads on serving requests).  aiokafka builds a batch
        once and caches it; without its ``_build`` hook the sender compresses on the loop."""
        build = getattr(builder, "_build", None)
        if build is None or self.compression_type is None:
            return None
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tracewire-kafka")
        try:
            return asyncio.get_running_loop().run_in_executor(self._executor, build)
        except RuntimeError:  # the interpreter is exiting: compress on the loop, as aiokafka would
            return None

    def _harvest(self, state: _InFlight) -> BaseException | None:
        """Settle finished sends; return the first retriable error (its records are pending again)."""
        error: BaseException | None = None
        still: list[tuple[int, list[int], asyncio.Future[Any]]] = []
        pending = state.pending if state.pending is not None else {}
        for partition, indices, future in state.sending:
            if not future.done():
                still.append((partition, indices, future))
                continue
            exc: BaseException | None = (
                asyncio.CancelledError() if future.cancelled() else future.exception()
            )
            if exc is None:
                state.delivered += len(indices)
            elif _is_record_error(exc) and len(indices) == 1:
                state.rejected.add(indices[0])
                record = state.batch[indices[0]]
                self._warn("broker rejected trace %s (%d bytes): %s", record.trace_id, record.size, exc)
            else:
                pending.setdefault(partition, []).extend(indices)
                if _is_record_error(exc):
                    # One record spoils the whole batch: resend them one by one to find it.
                    state.split.add(partition)
                elif error is None:
                    # A cancelled send (producer thrown away) is resent on the next attempt.
                    error = exc if not isinstance(exc, asyncio.CancelledError) else ConnectionError(
                        "Kafka producer was closed with sends in flight"
                    )
        state.sending = still
        state.pending = pending
        return error

    def _key_and_headers(self, record: TraceRecord) -> tuple[bytes, list[tuple[str, bytes]]]:
        trace_id = record.trace_id.encode()
        key = trace_id
        if self.key_by == "session_id" and record.session_id:
            key = record.session_id.encode()
        headers = [*_FIXED_HEADERS, ("trace-id", trace_id)]
        optional = []
        if record.session_id:
            optional.append(("session-id", record.session_id.encode()))
        if record.user_id:
            optional.append(("user-id", record.user_id.encode()))
        if len(record.payload) + _HEADER_ROOM > self.max_request_size:
            # The pipeline truncates payloads a little under max_trace_bytes; with very long
            # session and user ids the headers could still tip a message over the cap.  They are
            # in the payload too, so the message goes without them rather than being rejected.
            size = len(record.payload) + len(key) + _FRAMING
            size += sum(len(k) + len(v) for k, v in (*headers, *optional))
            if size > self.max_request_size:
                return key, headers
        headers.extend(optional)
        return key, headers

    # -- producer lifecycle -----------------------------------------------------------------------
    async def _ensure_producer(self) -> Any:
        if self._producer is not None:
            if not self._topic_ready:
                await self._create_topic()
            return self._producer
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self._client_options, **self._producer_options)
        try:
            await producer.start()
            if not self._topic_ready:
                await self._create_topic()
        except BaseException:
            # A half-started producer holds a sender task and sockets; close before retrying.
            await _close(producer)
            raise
        self._producer = producer
        return producer

    async def _create_topic(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(**self._client_options)
        try:
            await admin.start()
            replication = self.replication_factor
            if replication is None:
                # Three copies where the cluster has them, one on a single-broker dev cluster.
                cluster = await admin.describe_cluster()
                replication = max(1, min(3, len(cluster.get("brokers", ()) or ())))
            response = await admin.create_topics([NewTopic(self.topic, self.num_partitions, replication)])
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(admin.close(), _CLOSE_TIMEOUT)
        for _topic, code, message in getattr(response, "topic_errors", ()):
            if code not in (0, 36) and not self._create_warned:  # 36: TOPIC_ALREADY_EXISTS
                # E.g. no CREATE permission: the topic may still exist or be auto-created; sends tell.
                self._create_warned = True
                logger.warning("tracewire: could not create Kafka topic %s (error %d: %s)",
                               self.topic, code, message)
        self._topic_ready = True

    async def _failed(self) -> None:
        self._failures += 1
        # After an outage, check the topic again before resending: a broker that came back
        # without it (tansu keeps topics in memory; a topic deleted meanwhile) must get it back
        # rather than have the retry lost.  On a healthy cluster this is one CreateTopics call.
        self._topic_ready = not self.create_topic
        if self._failures < _RECREATE_AFTER or self._producer is None:
            return
        # A producer that keeps failing may hold stale metadata or addresses; start afresh.
        producer, self._producer = self._producer, None
        self._failures = 0
        await _close(producer)
        if self._inflight is not None:
            self._harvest(self._inflight)

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close(producer)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def after_fork(self) -> None:
        # The parent's producer is bound to a loop and sockets this process must not touch; its
        # executor's thread did not survive the fork.
        self._producer = None
        self._executor = None
        self._inflight = None
        self._failures = 0

    def _warn(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            logger.warning("tracewire: kafka sink " + msg, *args)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned: the hash the
    Java client's default partitioner applies to keys.  A word at a time, about 2x aiokafka's."""
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    words = length >> 2
    for k in struct.unpack_from("<%dI" % words, data):
        k = (k * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    tail, i = length & 3, words * 4
    if tail == 3:
        h ^= data[i + 2] << 16
    if tail >= 2:
        h ^= data[i + 1] << 8
    if tail:
        h = ((h ^ data[i]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


def _consume_exception(future: asyncio.Future[Any]) -> None:
    # A send whose batch was given up on must not log "exception was never retrieved".
    if not future.cancelled():
        future.exception()


def _is_record_error(exc: BaseException) -> bool:
    """A permanent error about this one record (too large, corrupt), not about the sink."""
    from aiokafka import errors

    if not isinstance(exc, errors.BrokerResponseError) or exc.retriable:
        return False
    return not isinstance(exc, (
        errors.TopicAuthorizationFailedError, errors.ClusterAuthorizationFailedError,
        errors.InvalidTopicError, errors.UnknownTopicOrPartitionError,
    ))


async def _close(producer: Any, timeout: float = _CLOSE_TIMEOUT) -> None:
    """Stop ``producer`` within ``timeout``.  Whatever it still holds was given up by the caller
    (counted lost by the pipeline, or to be resent by a new producer), so it is failed, not
    flushed: a dead broker cannot make this wait."""
    _fail_pending(producer)
    stop = asyncio.ensure_future(producer.stop())
    try:
        await asyncio.wait_for(asyncio.shield(stop), timeout)
    except asyncio.TimeoutError:
        logger.debug("tracewire: the Kafka producer did not stop within %.1fs", timeout)
    except asyncio.CancelledError:
        stop.cancel()
        raise
    except Exception:
        # E.g. aiokafka's sender tripping over a failed in-flight batch it meant to re-queue.
        logger.debug("tracewire: stopping the Kafka producer failed", exc_info=True)
    else:
        return
    if not stop.done():
        # Cancelling propagates into aiokafka's sender and its in-flight requests; give them a
        # moment to unwind so no task is left pending when the worker loop closes.
        stop.cancel()
        await asyncio.wait([stop], timeout=0.1)
    client = getattr(producer, "client", None)
    if client is not None:  # stop() did not get as far as closing the connections
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 0.1)


def _fail_pending(producer: Any) -> None:
    # aiokafka's stop() waits for every queued message (it expires only after
    # request_timeout_ms); failing them lets stop() close the connections now.
    accumulator = getattr(producer, "_message_accumulator", None)
    if accumulator is not None:
        from aiokafka.errors import KafkaConnectionError

        accumulator.fail_all(KafkaConnectionError("tracewire: producer closed with the broker unreachable"))


def parse_uri(uri: str) -> tuple[list[str], str]:
    """``kafka://h1:9092,h2:9092/topic`` → (["h1:9092", "h2:9092"], "topic")."""
    scheme, sep, rest = uri.partition("://")
    if scheme.lower() != "kafka" or not sep:
        raise ValueError(f"Kafka destination must look like kafka://host:port[,host:port]/topic, got {uri!r}")
    hosts, slash, topic = rest.partition("/")
    topic = topic.strip()
    if not slash or not topic:
        raise ValueError(f"Kafka destination {uri!r} names no topic: kafka://host:port[,host:port]/topic")
    if not _TOPIC_RE.fullmatch(topic):
        raise ValueError(f"Kafka destination {uri!r}: invalid topic {topic!r} (1-249 of [A-Za-z0-9._-])")
    servers = []
    for part in hosts.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not part.strip():
            continue
        if not colon:
            host, port = port, "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Kafka destination {uri!r}: bad broker address {part.strip()!r} (host:port)")
        servers.append(f"{host}:{port}")
    if not servers:
        raise ValueError(f"Kafka destination {uri!r} names no broker: kafka://host:port/topic")
    return servers, topic


# TRACING_KAFKA_<NAME> → constructor argument, parser.
def _int(text: str) -> int:
    return int(text.strip())


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"expected true/false, got {text!r}")
    return value in ("1", "true", "yes", "on")


def _text(text: str) -> str:
    return text.strip()


_EXTRA: dict[str, Any] = {
    "key_by": _text, "compression_type": _text, "linger_ms": _int, "max_batch_size": _int,
    "acks": _text, "request_timeout_ms": _int, "max_request_size": _int,
    "send_timeout": lambda t: float(t.strip()), "security_protocol": lambda t: t.strip().upper(),
    "sasl_mechanism": lambda t: t.strip().upper(), "sasl_plain_username": _text,
    "sasl_plain_password": str, "ssl_cafile": _text, "ssl_certfile": _text, "ssl_keyfile": _text,
    "ssl_password": str, "create_topic": _bool, "num_partitions": _int,
    "replication_factor": _int, "client_id": _text,
}


def _options_from_extra(extra: Mapping[str, str]) -> dict[str, Any]:
    """Parse the ``TRACING_KAFKA_*`` passthrough; a bad value is logged and its default kept."""
    options: dict[str, Any] = {}
    for key, raw in extra.items():
        if not key.startswith("kafka_"):
            continue
        name = key[len("kafka_"):]
        parse = _EXTRA.get(name)
        if parse is None:
            logger.warning("tracewire: ignoring unknown setting TRACING_%s", key.upper())
            continue
        try:
            options[name] = parse(raw)
        except ValueError as exc:
            logger.warning("tracewire: ignoring TRACING_%s=%r (%s)", key.upper(), raw, exc)
    return options
