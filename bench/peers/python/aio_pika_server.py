#!/usr/bin/python3
"""The aio-pika peer's server: aio-pika's own tutorial 6 RPC server, echoing.

As aio-pika's documentation writes it: one channel (its default: publisher confirms on), the
queue's iterator, each message inside message.process() (acked when the block ends) publishing
the body to reply_to with the request's correlation id through the default exchange, one
message at a time.

    aio_pika_server.py --url URL --queue Q --prefetch N

Declares the queue (non-durable, as the raw rabbitmq-c server does), serves until SIGTERM.
Run with /usr/bin/python3 (Debian python3-aio-pika).
"""
import asyncio
import signal
import sys

import aio_pika

import benchutil


async def serve(args):
    connection = await aio_pika.connect(args.url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=args.prefetch)
    exchange = channel.default_exchange
    queue = await channel.declare_queue(args.queue)
    print("serving " + args.queue, flush=True)
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process(requeue=False):
                await exchange.publish(
                    aio_pika.Message(body=message.body, correlation_id=message.correlation_id),
                    routing_key=message.reply_to)


async def run(args):
    task = asyncio.ensure_future(serve(args))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    return 0


def main():
    return asyncio.run(run(benchutil.server_options(__doc__.splitlines()[0])))


if __name__ == "__main__":
    sys.exit(main())
