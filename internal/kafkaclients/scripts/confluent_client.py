"""Produce or consume with confluent-kafka (librdkafka), for Silt's tests (run by package internal/kafkaclients).

usage: confluent_client.py produce BOOTSTRAP TOPIC CODEC IDEMPOTENT < records
       confluent_client.py consume BOOTSTRAP TOPIC PARTITIONS COUNT > records
       confluent_client.py group BOOTSTRAP TOPIC GROUP COUNT > records

Records are JSON lines: key and value in base64 (null for null), headers as
[name, base64 or null] pairs, ts in milliseconds; consume adds partition and
offset. Produce prints each record's partition and offset once acknowledged.
group consumes COUNT records as a member of GROUP, committing (synchronously,
auto-commit off) after each batch it printed, then leaves.

SILT_KAFKA_USER and SILT_KAFKA_PASSWORD, when set, authenticate with SASL
(SILT_KAFKA_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512); SILT_KAFKA_CA,
when set, connects over TLS trusting that CA.
"""
import base64
import json
import os
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def unb64(s):
    return None if s is None else base64.b64decode(s)


def security():
    conf = {}
    user, ca = os.environ.get("SILT_KAFKA_USER"), os.environ.get("SILT_KAFKA_CA")
    if user:
        conf.update({"security.protocol": "SASL_SSL" if ca else "SASL_PLAINTEXT",
                     "sasl.mechanisms": os.environ.get("SILT_KAFKA_MECHANISM", "PLAIN"),
                     "sasl.username": user, "sasl.password": os.environ["SILT_KAFKA_PASSWORD"]})
    elif ca:
        conf["security.protocol"] = "SSL"
    if ca:
        conf["ssl.ca.location"] = ca
    return conf


def produce(bootstrap, topic, codec, idempotent):
    conf = {
        **security(),
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "enable.idempotence": idempotent == "true",
        "partitioner": "murmur2_random",  # the Java client's, which Silt's HTTP API uses too
        "linger.ms": 20,
        "message.timeout.ms": 60000,
    }
    p = Producer(conf)
    acked = {}  # input index -> (partition, offset); reports come per partition
    errors = []

    def reporter(i):
        def report(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                acked[i] = (msg.partition(), msg.offset())
        return report

    n = 0
    for line in sys.stdin:
        r = json.loads(line)
        headers = [(h[0], unb64(h[1])) for h in r.get("headers") or []]
        p.produce(topic, key=unb64(r["key"]), value=unb64(r["value"]), headers=headers or None,
                  timestamp=r["ts"], on_delivery=reporter(n))
        n += 1
        p.poll(0)
    left = p.flush(60)
    if left or errors or len(acked) != n:
        sys.exit(f"{left} records not delivered, {len(acked)} of {n} acknowledged, errors {errors[:3]}")
    for i in range(n):
        print(json.dumps({"partition": acked[i][0], "offset": acked[i][1]}))


def consume(bootstrap, topic, partitions, count):
    c = Consumer({
        **security(),
        "bootstrap.servers": bootstrap,
        # librdkafka's consumer needs a group id, even with manual
        # assignment; nothing is committed.
        "group.id": "silt-test-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "fetch.wait.max.ms": 200,
    })
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.time() + 60
    while len(got) < count and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append(m)
    c.close()
    if len(got) != count:
        sys.exit(f"consumed {len(got)} of {count} records")
    for m in got:
        print(json.dumps({
            "partition": m.partition(), "offset": m.offset(), "key": b64(m.key()), "value": b64(m.value()),
            "headers": [[k, b64(v)] for k, v in (m.headers() or [])], "ts": m.timestamp()[1],
        }))


def group(bootstrap, topic, group_id, count):
    c = Consumer({
        **security(),
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 200,
    })
    c.subscribe([topic])
    got = 0
    deadline = time.time() + 90
    while got < count and time.time() < deadline:
        batch = c.consume(num_messages=min(50, count - got), timeout=0.5)
        for m in batch:
            if m.error():
                raise KafkaException(m.error())
            print(json.dumps({"partition": m.partition(), "offset": m.offset(), "key": b64(m.key()),
                              "value": b64(m.value()), "ts": m.timestamp()[1]}), flush=True)
        if batch:
            c.commit(asynchronous=False)  # what was printed
            got += len(batch)
    c.close()
    if got != count:
        sys.exit(f"consumed {got} of {count} records")


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    elif sys.argv[1] == "group":
        group(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
