"""Produce or consume with kafka-python, for Silt's tests (run by package internal/kafkaclients).

usage: kafkapython_client.py produce BOOTSTRAP TOPIC CODEC < records
       kafkapython_client.py consume BOOTSTRAP TOPIC PARTITIONS COUNT > records

Records are JSON lines as in confluent_client.py. CODEC is none or gzip (the
other codecs need Python modules Debian's python3-kafka does not pull in).
"""
import base64
import json
import os
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def unb64(s):
    return None if s is None else base64.b64decode(s)


def security():
    """SASL (SILT_KAFKA_USER, SILT_KAFKA_PASSWORD, SILT_KAFKA_MECHANISM) and TLS (SILT_KAFKA_CA), when set."""
    conf = {}
    user, ca = os.environ.get("SILT_KAFKA_USER"), os.environ.get("SILT_KAFKA_CA")
    if user:
        conf.update(security_protocol="SASL_SSL" if ca else "SASL_PLAINTEXT",
                    sasl_mechanism=os.environ.get("SILT_KAFKA_MECHANISM", "PLAIN"),
                    sasl_plain_username=user, sasl_plain_password=os.environ["SILT_KAFKA_PASSWORD"])
    elif ca:
        conf["security_protocol"] = "SSL"
    if ca:
        conf["ssl_cafile"] = ca
    return conf


def produce(bootstrap, topic, codec):
    p = KafkaProducer(**security(), bootstrap_servers=bootstrap, compression_type=None if codec == "none" else codec,
                      linger_ms=20, acks="all", retries=5, request_timeout_ms=30000)
    futures = []
    for line in sys.stdin:
        r = json.loads(line)
        headers = [(h[0], unb64(h[1])) for h in r.get("headers") or []]
        futures.append(p.send(topic, key=unb64(r["key"]), value=unb64(r["value"]), headers=headers, timestamp_ms=r["ts"]))
    p.flush(60)
    for f in futures:
        md = f.get(timeout=60)
        print(json.dumps({"partition": md.partition, "offset": md.offset}))
    p.close(10)


def consume(bootstrap, topic, partitions, count):
    c = KafkaConsumer(**security(), bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=200)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = []
    deadline = time.time() + 60
    while len(got) < count and time.time() < deadline:
        for msgs in c.poll(timeout_ms=500).values():
            got.extend(msgs)
    c.close()
    if len(got) != count:
        sys.exit(f"consumed {len(got)} of {count} records")
    for m in got:
        print(json.dumps({
            "partition": m.partition, "offset": m.offset, "key": b64(m.key), "value": b64(m.value),
            "headers": [[k, b64(v)] for k, v in (m.headers or [])], "ts": m.timestamp,
        }))


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
