// The Node peer's server: rabbitmq-client's createConsumer (npm) echoing each request's body
// with the handler's reply(), as its README shows an RPC server: reply() publishes to reply_to
// with the request's correlation id; the consumer acks when the handler has returned. Nagle's
// algorithm off (noDelay: true), as in client.js.
//
//   node server.js --modules DIR --url URL --queue Q --prefetch N
//
// Declares the queue (non-durable, as the raw rabbitmq-c server does), serves until SIGTERM.
'use strict';

function options(argv) {
  const o = {url: 'amqp://guest:guest@localhost:5672/%2F', queue: 'rpc_queue', prefetch: 512,
             modules: ''};
  for (let i = 2; i + 1 < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in o)) throw new Error('unknown option ' + argv[i]);
    o[key] = typeof o[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return o;
}

const o = options(process.argv);
const {Connection} = require(require.resolve('rabbitmq-client', {paths: [o.modules]}));
const rabbit = new Connection(
    {url: o.url, noDelay: true, connectionName: 'amqp-rpc bench: node server'});
rabbit.on('error', (err) => process.stderr.write('node server: ' + err + '\n'));
const server = rabbit.createConsumer(
    {queue: o.queue, queueOptions: {durable: false}, qos: {prefetchCount: o.prefetch}},
    async (req, reply) => {
      await reply(req.body);
    });
server.on('error', (err) => process.stderr.write('node server: ' + err + '\n'));
server.on('ready', () => process.stdout.write('serving ' + o.queue + '\n'));
process.on('SIGTERM', async () => {
  await server.close();
  await rabbit.close();
  process.exit(0);
});
