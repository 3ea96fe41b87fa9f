#!/usr/bin/python3
"""The pika peer's client: the seed's (tutorial 6's) BlockingConnection client, calling an echo.

One call at a time, as the seed does: publish to the queue with reply_to (an exclusive,
server-named queue) and a UUID correlation_id, then process_data_events until the reply with
that id comes (no sleep). BlockingConnection has no way to keep several calls in flight, so this
client runs at 1 in flight only.

    pika_client.py --url URL --queue Q --concurrency 1 --seconds S --warmup W --size B

Prints "@measure" and "@end" around the measured window, then one JSON line.
Run with /usr/bin/python3 (Debian python3-pika).
"""
import sys
import time
import uuid

import pika

import benchutil


def main():
    args = benchutil.client_options(__doc__.splitlines()[0])
    if args.concurrency != 1:
        print("pika_client: sequential: --concurrency must be 1", file=sys.stderr)
        return 2
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    callback_queue = channel.queue_declare(queue="", exclusive=True).method.queue
    state = {"corr_id": None, "response": None}

    def on_response(ch, method, props, body):
        if state["corr_id"] == props.correlation_id:
            state["response"] = body

    channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
    body = b"x" * args.size

    def call():
        state["response"] = None
        state["corr_id"] = str(uuid.uuid4())
        channel.basic_publish(exchange="", routing_key=args.queue,
                              properties=pika.BasicProperties(reply_to=callback_queue,
                                                              correlation_id=state["corr_id"]),
                              body=body)
        deadline = time.monotonic() + 30
        while state["response"] is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no reply within 30 s")
            connection.process_data_events(time_limit=remaining)

    start = time.monotonic()
    measure_from = start + args.warmup
    end = measure_from + args.seconds
    latencies, measuring, error = [], False, None
    try:
        while True:
            t0 = time.perf_counter_ns()
            call()
            now = time.monotonic()
            if not measuring and now >= measure_from:
                measuring, first = True, now
                benchutil.mark("measure")
            elif measuring and now < end:
                latencies.append((time.perf_counter_ns() - t0) / 1000.0)
            if now >= end:
                last = now
                benchutil.mark("end")
                break
    except Exception as e:  # noqa: BLE001 - any failure ends the run with its reason
        error, last = repr(e), time.monotonic()
        if not measuring:
            first = last
            benchutil.mark("measure")
        benchutil.mark("end")
    benchutil.result(latencies, last - first, error)
    try:
        connection.close()
    except Exception:  # noqa: BLE001
        pass
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main())
