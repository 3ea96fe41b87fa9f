#!/usr/bin/python3
# _*_coding:utf-8_*_
"""Clinet 生产端: the seed's RabbitMQ RPC client (tutorial 6, fib over rpc_queue), ported to pika 1.x.

    seed_rpc_client.py [--timeout S] [N ...]      call fib(N) for each N in turn (default: 6),
                                                  print one answer per line (just the number)
    seed_rpc_client.py --bench CALLS [--n N]      CALLS sequential calls of fib(N) (default 10),
                                                  print one JSON line of timings

Additions to the seed: broker URL from env AMQP_URL (default localhost), several n values,
no sleep in the polling loop, --timeout per call (then an error on stderr and exit 2),
--bench. Wire format unchanged: body str(n) to rpc_queue with reply_to (an exclusive,
server-named queue) and correlation_id; the reply body is str(fib(n)).
Exit status: 0 ok, 1 connection/protocol error, 2 timeout (or bad arguments).

Run with /usr/bin/python3 (Debian python3-pika 1.2).
"""
import argparse
import json
import os
import sys
import time
import uuid

import pika


class RpcTimeout(Exception):
    pass


# 斐波那契数列 前两个数相加依次排列
class FibonacciRpcClient(object):
    def __init__(self, url):
        # 链接远程
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

        # 生成随机queue
        result = self.channel.queue_declare(queue='', exclusive=True)
        # 随机取queue名字,发给消费端
        self.callback_queue = result.method.queue

        # self.on_response 回调函数:只要收到消息就调用这个函数。
        # 声明收到消息后就 收queue=self.callback_queue内的消息
        self.channel.basic_consume(queue=self.callback_queue,
                                   on_message_callback=self.on_response,
                                   auto_ack=True)

    # 收到消息就调用
    # ch 管道内存对象地址
    # method 消息发给哪个queue
    # body数据对象
    def on_response(self, ch, method, props, body):
        # 判断本机生成的ID 与 生产端发过来的ID是否相等
        if self.corr_id == props.correlation_id:
            # 将body值 赋值给self.response
            self.response = body

    def call(self, n, timeout):
        # 赋值变量,一个循环值
        self.response = None
        # 随机一次唯一的字符串
        self.corr_id = str(uuid.uuid4())
        # routing_key='rpc_queue' 发一个消息到rpc_queue内
        self.channel.basic_publish(exchange='',
                                   routing_key='rpc_queue',
                                   properties=pika.BasicProperties(
                                       # 执行命令之后结果返回给self.callaback_queue这个队列中
                                       reply_to=self.callback_queue,
                                       # 生成UUID 发送给消费端
                                       correlation_id=self.corr_id,
                                   ),
                                   # 发的消息,必须传入字符串,不能传数字
                                   body=str(n))
        deadline = time.monotonic() + timeout
        # 没有数据就循环收 (不再 sleep: 阻塞到有数据或超时为止)
        while self.response is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RpcTimeout("no reply to fib(%s) within %gs" % (n, timeout))
            self.connection.process_data_events(time_limit=remaining)
        return int(self.response)

    def close(self):
        try:
            self.connection.close()
        except Exception:
            pass


def percentile(sorted_values, p):
    # nearest-rank percentile
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, int(-(-p * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def main():
    parser = argparse.ArgumentParser(description="seed RPC client: fib(n) over rpc_queue")
    parser.add_argument("values", nargs="*", type=int, metavar="N",
                        help="call fib(N) for each N in turn (default: 6, as the seed)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                        help="give up waiting for a reply after SECONDS (per call, default 30)")
    parser.add_argument("--bench", type=int, default=0, metavar="CALLS",
                        help="benchmark: CALLS sequential calls of fib(--n), print JSON")
    parser.add_argument("--n", type=int, default=10, help="n for --bench (default 10)")
    args = parser.parse_args()
    if args.bench and args.values:
        parser.error("give either N values or --bench, not both")

    # big fib(n) have more digits than Python 3.11's default int/str conversion limit
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(0)

    url = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")
    try:
        # 实例化
        fibonacci_rpc = FibonacciRpcClient(url)
    except pika.exceptions.AMQPError as e:
        print("seed_rpc_client: cannot connect to %s: %r" % (url, e), file=sys.stderr)
        return 1

    try:
        if args.bench:
            lat_us = []
            t0 = time.perf_counter()
            for _ in range(args.bench):
                t = time.perf_counter_ns()
                fibonacci_rpc.call(args.n, args.timeout)
                lat_us.append((time.perf_counter_ns() - t) / 1000.0)
            seconds = time.perf_counter() - t0
            lat_us.sort()
            print(json.dumps({
                "calls": args.bench,
                "seconds": round(seconds, 6),
                "calls_per_s": round(args.bench / seconds, 1) if seconds > 0 else 0.0,
                "p50_us": round(percentile(lat_us, 50), 1),
                "p99_us": round(percentile(lat_us, 99), 1),
                "max_us": round(lat_us[-1], 1),
            }, separators=(",", ":")), flush=True)
        else:
            for n in args.values or [6]:
                response = fibonacci_rpc.call(n, args.timeout)
                print(response, flush=True)
    except RpcTimeout as e:
        print("seed_rpc_client: timeout: %s" % e, file=sys.stderr)
        fibonacci_rpc.close()
        return 2
    except pika.exceptions.AMQPError as e:
        print("seed_rpc_client: AMQP error: %r" % (e,), file=sys.stderr)
        fibonacci_rpc.close()
        return 1
    fibonacci_rpc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
