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
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sinks import _kafka_producer as producers
from sinks._kafka_delivery import Delivery, consume_exception
from sinks._kafka_options import (
    COMPRESSIONS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    TOPIC_RE,
    options_from_extra,
    parse_uri,
)
from sinks._kafka_partitioner import Partitioner, murmur2
from sinks.base import Sink
from tracewire.export.record import SCHEMA_VERSION
from tracewire.logs import RateLimitedLog

if TYPE_CHECKING:
    import ssl

    from tracewire.config import Settings
    from tracewire.export.record import TraceRecord

logger = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_SIZE = 1048576  # Kafka's default message cap, = TRACING_MAX_TRACE_BYTES default
_RECREATE_AFTER = 3  # consecutive failed exports before the producer is thrown away
_FIXED_HEADERS = (("content-type", b"application/json"), ("tracewire-schema", SCHEMA_VERSION.encode()))
# Record framing beyond key, value and header bytes: varints, attributes, batch header (61 bytes).
_FRAMING = 128
_HEADER_ROOM = 4096  # below this distance from the cap no header arithmetic is needed


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
        if not TOPIC_RE.fullmatch(topic or ""):
            raise ValueError(f"invalid Kafka topic name {topic!r}: use 1-249 of [A-Za-z0-9._-]")
        if key_by not in ("trace_id", "session_id"):
            raise ValueError(f"key_by must be 'trace_id' or 'session_id', got {key_by!r}")
        if compression_type == "auto":
            # zstd was the fastest codec measured (README, "Kafka"); aiokafka needs cramjam for it.
            compression_type = "zstd" if producers.zstd_available() else None
        elif compression_type in ("none", ""):
            compression_type = None
        if compression_type is not None and compression_type not in COMPRESSIONS:
            raise ValueError(f"compression_type must be one of none, {', '.join(COMPRESSIONS)}, auto")
        if str(acks) not in ("0", "1", "all", "-1"):
            raise ValueError(f"acks must be 0, 1 or 'all', got {acks!r}")
        if security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
        if sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}")
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
        self._inflight: Delivery | None = None
        self._partitioner = Partitioner(cache_keys=key_by == "session_id")
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._failures = 0
        self._log = RateLimitedLog(logger)

    # -- construction from TRACING_DESTINATION ------------------------------------------------------
    @classmethod
    def from_uri(cls, uri: str, settings: Settings) -> KafkaSink:
        """``kafka://host:port[,host:port]/topic``; producer options from ``TRACING_KAFKA_*``."""
        servers, topic = parse_uri(uri)
        options = options_from_extra(settings.extra)
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
            state = self._inflight = Delivery(batch)
        try:
            await asyncio.wait_for(self._deliver(state), self.send_timeout)
        except asyncio.TimeoutError:
            await self._failed()
            raise TimeoutError(
                f"Kafka did not acknowledge {state.unacknowledged} of {len(batch)} "
                f"traces within {self.send_timeout:.1f}s"
            ) from None
        except Exception:
            await self._failed()
            raise
        self._failures = 0
        self._inflight = None
        return len(state.rejected)

    async def _deliver(self, state: Delivery) -> None:
        producer = await self._ensure_producer()
        if state.pending is None:
            partitions = sorted(await producer.partitions_for(self.topic))
            state.pending = self._assign(state.batch, partitions)
        else:
            state.harvest(self._warn)  # settle what the last attempt left in flight; failures are pending
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
                    future.add_done_callback(consume_exception)
                    state.sending.append((partition, chunk, future))
                    handed += 1
            except BaseException:
                for partition, chunk, _, _ in built[handed:]:  # never handed over: send again later
                    state.pending.setdefault(partition, []).extend(chunk)
                raise
            if state.sending:  # this attempt's sends, and any the last attempt left in flight
                # asyncio.wait, not gather: a deadline must leave the sends in flight, not cancel them.
                await asyncio.wait([future for _, _, future in state.sending])
            error = state.harvest(self._warn)
            if error is not None:
                raise error
            if not state.pending:
                return
            # Left pending now: the records of a batch the broker refused; they go one by one.

    def _assign(self, batch: Sequence[TraceRecord], partitions: list[int]) -> dict[int, list[int]]:
        """Partition of each record: murmur2 of its key, as Kafka's Java default partitioner."""
        if self.key_by == "session_id":
            keys = [r.session_id or r.trace_id for r in batch]
        else:
            keys = [r.trace_id for r in batch]
        return self._partitioner.assign(keys, partitions)

    def _fill(self, producer: Any, state: Delivery, indices: list[int], single: bool) -> tuple[Any, int]:
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
        on serializing (and the app's threads on serving requests).  Without aiokafka's build
        hook the sender compresses on the loop."""
        build = producers.build_hook(builder)
        if build is None or self.compression_type is None:
            return None
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tracewire-kafka")
        try:
            return asyncio.get_running_loop().run_in_executor(self._executor, build)
        except RuntimeError:  # the interpreter is exiting: compress on the loop, as aiokafka would
            return None

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
        producer = self._producer
        if producer is None:
            producer = await producers.start_producer(self._client_options, self._producer_options)
            try:
                if not self._topic_ready:
                    await self._create_topic()
            except BaseException:
                await producers.close(producer)
                raise
            self._producer = producer
        elif not self._topic_ready:
            await self._create_topic()
        return producer

    async def _create_topic(self) -> None:
        errors = await producers.create_topic(
            self._client_options, self.topic, self.num_partitions, self.replication_factor
        )
        for code, message in errors:
            if not self._create_warned:
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
        await producers.close(producer)
        if self._inflight is not None:
            self._inflight.harvest(self._warn)

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producers.close(producer)
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
        self._log.warning("kafka", "tracewire: kafka sink " + msg, *args)



__all__ = ["KafkaSink", "murmur2", "parse_uri"]
