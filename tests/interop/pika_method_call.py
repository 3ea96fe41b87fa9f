#!/usr/bin/python3
"""Calls a method of an amqp-rpc service from pika, as any AMQP client can (docs/PROTOCOL.md):

    pika_method_call.py QUEUE METHOD BODY [--content-type T] [--timeout S]

Publishes BODY to QUEUE with header x-rpc-method = METHOD, a reply_to and a correlation_id,
waits for the reply (at most --timeout seconds) and prints one line:
    STATUS|CONTENT_TYPE|BODY
STATUS is the reply's x-rpc-status header, "ok" when it has none. Exit 0 when a reply came,
2 on timeout. The broker URL comes from AMQP_URL. Run with /usr/bin/python3 (python3-pika).
"""
import argparse
import os
import sys
import time
import uuid

import pika


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("queue")
    ap.add_argument("method")
    ap.add_argument("body")
    ap.add_argument("--content-type", default="application/json")
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    conn = pika.BlockingConnection(pika.URLParameters(os.environ.get("AMQP_URL", "amqp://")))
    ch = conn.channel()
    reply_queue = ch.queue_declare(queue="", exclusive=True).method.queue
    replies = []
    ch.basic_consume(queue=reply_queue, auto_ack=True,
                     on_message_callback=lambda c, m, props, body: replies.append((props, body)))
    cid = str(uuid.uuid4())
    ch.basic_publish(exchange="", routing_key=a.queue, body=a.body.encode(),
                     properties=pika.BasicProperties(reply_to=reply_queue, correlation_id=cid,
                                                     content_type=a.content_type,
                                                     headers={"x-rpc-method": a.method}))
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
        for props, body in replies:
            if props.correlation_id == cid:
                status = (props.headers or {}).get("x-rpc-status", "ok")
                print("%s|%s|%s" % (status, props.content_type or "", body.decode(errors="replace")))
                conn.close()
                return 0
    print("no reply within %s s" % a.timeout, file=sys.stderr)
    conn.close()
    return 2


if __name__ == "__main__":
    sys.exit(main())
