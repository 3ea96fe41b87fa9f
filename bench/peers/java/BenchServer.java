// The Java peer's server: the official RabbitMQ Java client's RpcServer (Debian's
// librabbitmq-client-java 5.0.0) echoing each request's body. RpcServer's mainloop takes one
// delivery at a time, publishes the reply to reply_to with the request's correlation id, then
// acks: the wire contract of RabbitMQ's tutorial 6.
//
//   java -cp CLASSES:amqp-client.jar:slf4j-api.jar:slf4j-nop.jar BenchServer \
//        --url URL --queue Q --prefetch N
//
// Declares the queue (non-durable, as the raw rabbitmq-c server does), serves until SIGTERM.
import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.Delivery;
import com.rabbitmq.client.RpcServer;

public final class BenchServer {
  public static void main(String[] args) throws Exception {
    String url = "amqp://guest:guest@localhost:5672/%2F", queue = "rpc_queue";
    int prefetch = 512;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--url": url = args[i + 1]; break;
        case "--queue": queue = args[i + 1]; break;
        case "--prefetch": prefetch = Integer.parseInt(args[i + 1]); break;
        default: System.err.println("BenchServer: unknown option " + args[i]); System.exit(2);
      }
    }
    ConnectionFactory factory = new ConnectionFactory();
    factory.setUri(url);
    final Connection connection = factory.newConnection("amqp-rpc bench: java server");
    Channel channel = connection.createChannel();
    channel.queueDeclare(queue, false, false, false, null);
    channel.basicQos(prefetch);
    final RpcServer server = new RpcServer(channel, queue) {
      @Override
      public byte[] handleCall(Delivery request, AMQP.BasicProperties replyProperties) {
        return request.getBody();
      }
    };
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        server.terminateMainloop();
        connection.close(2000);
      } catch (Exception ignored) {
        // stopping: nothing to report to
      }
    }));
    System.out.println("serving " + queue);
    System.out.flush();
    server.mainloop();
  }
}
