#!/usr/bin/python3
# _*_coding:utf-8_*_
"""server 消费端: the seed's RabbitMQ RPC server (tutorial 6, fib over rpc_queue), ported to pika 1.x.

Additions to the seed: broker URL from env AMQP_URL (default localhost), iterative fib,
--count N to exit after serving N requests. Wire format unchanged: request body str(n),
reply body str(fib(n)) to props.reply_to with the request's correlation_id.

Run with /usr/bin/python3 (Debian python3-pika 1.2).
"""
import argparse
import os
import sys

import pika

parser = argparse.ArgumentParser(description="seed RPC server: fib(n) over rpc_queue")
parser.add_argument("--count", type=int, default=0, metavar="N",
                    help="exit after serving N requests (default 0: serve forever)")
args = parser.parse_args()

# fib(n) for big n has more digits than Python 3.11's default int/str conversion limit
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

# 链接socket
connection = pika.BlockingConnection(pika.URLParameters(
    os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")))
channel = connection.channel()

# 生成rpc queue
channel.queue_declare(queue='rpc_queue')


# 斐波那契数列 (迭代版, 大的n也很快)
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


served = 0


# 收到消息就调用
# ch 管道内存对象地址
# method 消息发给哪个queue
# props 返回给消费的返回参数
# body数据对象
def on_request(ch, method, props, body):
    global served
    n = int(body)

    print(" [.] fib(%s)" % n, flush=True)
    # 调用斐波那契函数 传入结果
    response = fib(n)

    ch.basic_publish(exchange='',
                     # 生产端随机生成的queue
                     routing_key=props.reply_to,
                     # 获取UUID唯一 字符串数值
                     properties=pika.BasicProperties(correlation_id=props.correlation_id),
                     # 消息返回给生产端
                     body=str(response))
    # 确保任务完成
    ch.basic_ack(delivery_tag=method.delivery_tag)

    served += 1
    if args.count and served >= args.count:
        ch.stop_consuming()


# rpc_queue收到消息:调用on_request回调函数
# queue='rpc_queue'从rpc内收
channel.basic_consume(queue='rpc_queue', on_message_callback=on_request)

print(" [x] Awaiting RPC requests", flush=True)
try:
    channel.start_consuming()
except KeyboardInterrupt:
    pass
connection.close()
