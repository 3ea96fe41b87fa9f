#!/usr/bin/python3
"""The pika peer's server: the seed's (tutorial 6's) BlockingConnection server, echoing.

basic_consume with a callback that publishes the body to reply_to with the request's
correlation_id, then acks: the seed's server with fib(n) replaced by the body itself.

    pika_server.py --url URL --queue Q --prefetch N

Declares the queue (non-durable, as the raw rabbitmq-c server does), serves until SIGTERM.
Run with /usr/bin/python3 (Debian python3-pika).
"""
import signal
import sys

import pika

import benchutil


def main():
    args = benchutil.server_options(__doc__.splitlines()[0])
    connection = pika.BlockingConnection(pika.URLParameters(args.url))
    channel = connection.channel()
    channel.queue_declare(queue=args.queue)
    channel.basic_qos(prefetch_count=args.prefetch)

    def on_request(ch, method, props, body):
        ch.basic_publish(exchange="", routing_key=props.reply_to,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id),
                         body=body)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    channel.basic_consume(queue=args.queue, on_message_callback=on_request)
    # SIGTERM ends start_consuming between deliveries.
    signal.signal(signal.SIGTERM, lambda *_: connection.add_callback_threadsafe(
        channel.stop_consuming))
    print("serving " + args.queue, flush=True)
    channel.start_consuming()
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
