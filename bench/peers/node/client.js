// The Node peer's client: rabbitmq-client's RPCClient (npm), as its README has it: one RPCClient
// on one connection, N async callers each awaiting rpc.send() in a loop. Replies come through
// direct reply-to (RPCClient's only mode); publisher confirms off (its default). Nagle's
// algorithm off (noDelay: true, the library's documented option "for reduced latency"): its
// default leaves it on, which holds a lone call ~40 ms (about 40 calls/s at 1 in flight), while
// the other clients here (rabbitmq-c, Java, pika, asyncio) all set TCP_NODELAY.
//
//   node client.js --modules DIR --url URL --queue Q --concurrency N --seconds S --warmup W --size B
//
// DIR: the node_modules holding rabbitmq-client (build/bench-peers/node/node_modules).
// Prints "@measure" when the measured window opens and "@end" when it closes, then one JSON
// line {calls, seconds, calls_per_s, p50_us, p99_us, max_us} over the calls completed inside.
'use strict';

function options(argv) {
  const o = {url: 'amqp://guest:guest@localhost:5672/%2F', queue: 'rpc_queue', concurrency: 1,
             seconds: 2, warmup: 0.5, size: 16, modules: ''};
  for (let i = 2; i + 1 < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in o)) throw new Error('unknown option ' + argv[i]);
    o[key] = typeof o[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return o;
}

function percentile(sorted, p) {  // nearest rank, as the C++ bench computes it
  if (sorted.length === 0) return 0;
  return sorted[Math.floor(p / 100 * (sorted.length - 1) + 0.5)];
}

async function main() {
  const o = options(process.argv);
  const {Connection} = require(require.resolve('rabbitmq-client', {paths: [o.modules]}));
  const rabbit = new Connection(
      {url: o.url, noDelay: true, connectionName: 'amqp-rpc bench: node client'});
  rabbit.on('error', (err) => process.stderr.write('node client: ' + err + '\n'));
  const rpc = rabbit.createRPCClient();
  const body = Buffer.alloc(o.size, 'x');
  const latencies = [];
  let measuring = false, stop = false, error = null;

  async function caller() {
    while (!stop) {
      const t0 = process.hrtime.bigint();
      try {
        await rpc.send(o.queue, body);
      } catch (e) {
        if (error === null) error = String(e);
        stop = true;
        return;
      }
      if (measuring) latencies.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }

  const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));
  const callers = [];
  for (let i = 0; i < o.concurrency; ++i) callers.push(caller());
  await sleep(o.warmup);
  const from = process.hrtime.bigint();
  measuring = true;
  process.stdout.write('@measure\n');
  await sleep(o.seconds);
  measuring = false;
  const to = process.hrtime.bigint();
  process.stdout.write('@end\n');
  stop = true;
  await Promise.all(callers);
  latencies.sort((a, b) => a - b);
  const seconds = Number(to - from) / 1e9;
  const result = {calls: latencies.length, seconds,
                  calls_per_s: seconds > 0 ? latencies.length / seconds : 0,
                  p50_us: percentile(latencies, 50), p99_us: percentile(latencies, 99),
                  max_us: latencies.length ? latencies[latencies.length - 1] : 0};
  if (error !== null) result.error = error;
  process.stdout.write(JSON.stringify(result) + '\n');
  await rpc.close();
  await rabbit.close();
  process.exitCode = error === null ? 0 : 1;
}

main().catch((e) => {
  process.stderr.write('node client: ' + (e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
