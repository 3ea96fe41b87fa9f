#!/usr/bin/python3
"""The aio-pika peer's client: aio-pika's own tutorial 6 RPC client, calling an echo.

As aio-pika's documentation writes it: one channel (aio-pika's default: publisher confirms on),
replies to an exclusive, server-named callback queue consumed with no_ack, one future per
UUID correlation id; N asyncio tasks each awaiting a call at a time keep N calls in flight.
(aio_pika.patterns.RPC is another protocol, pickled calls with their own headers: it cannot
call tutorial 6's servers, so it is not the client measured here.)

    aio_pika_client.py --url URL --queue Q --concurrency N --seconds S --warmup W --size B

Prints "@measure" and "@end" around the measured window, then one JSON line.
Run with /usr/bin/python3 (Debian python3-aio-pika).
"""
import asyncio
import sys
import time
import uuid

import aio_pika

import benchutil


async def run(args):
    loop = asyncio.get_running_loop()
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    callback_queue = await channel.declare_queue(exclusive=True)
    futures = {}

    async def on_response(message):
        future = futures.pop(message.correlation_id, None)
        if future is not None:
            future.set_result(message.body)

    await callback_queue.consume(on_response, no_ack=True)
    body = b"x" * args.size
    state = {"measuring": False, "stop": False, "error": None}
    latencies = []

    async def call():
        correlation_id = str(uuid.uuid4())
        future = loop.create_future()
        futures[correlation_id] = future
        await channel.default_exchange.publish(
            aio_pika.Message(body, correlation_id=correlation_id, reply_to=callback_queue.name),
            routing_key=args.queue)
        return await asyncio.wait_for(future, 30)

    async def caller():
        while not state["stop"]:
            t0 = time.perf_counter_ns()
            try:
                await call()
            except Exception as e:  # noqa: BLE001 - the first failure ends the run
                if state["error"] is None:
                    state["error"] = repr(e)
                state["stop"] = True
                return
            if state["measuring"]:
                latencies.append((time.perf_counter_ns() - t0) / 1000.0)

    callers = [asyncio.ensure_future(caller()) for _ in range(args.concurrency)]
    await asyncio.sleep(args.warmup)
    first = time.monotonic()
    state["measuring"] = True
    benchutil.mark("measure")
    await asyncio.sleep(args.seconds)
    state["measuring"] = False
    last = time.monotonic()
    benchutil.mark("end")
    state["stop"] = True
    await asyncio.gather(*callers)
    benchutil.result(latencies, last - first, state["error"])
    await connection.close()
    return 0 if state["error"] is None else 1


def main():
    return asyncio.run(run(benchutil.client_options(__doc__.splitlines()[0])))


if __name__ == "__main__":
    sys.exit(main())
