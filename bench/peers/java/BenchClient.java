// The Java peer's client: the official RabbitMQ Java client's RpcClient (Debian's
// librabbitmq-client-java 5.0.0), as its users reach for concurrency: N threads sharing one
// RpcClient on one channel, each making blocking calls (primitiveCall) one after another.
// Replies come through direct reply-to, RpcClient's default.
//
//   java -cp CLASSES:amqp-client.jar:slf4j-api.jar:slf4j-nop.jar BenchClient \
//        --url URL --queue Q --concurrency N --seconds S --warmup W --size B
//
// Prints "@measure" when the measured window opens and "@end" when it closes (the orchestrator
// reads the CPU counters of client, server and broker at those two lines), then one JSON line:
// {"calls", "seconds", "calls_per_s", "p50_us", "p99_us", "max_us"} over the calls completed in
// the window.
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.RpcClient;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;

public final class BenchClient {
  private static volatile boolean measuring = false;
  private static volatile boolean stop = false;
  private static final AtomicReference<String> error = new AtomicReference<>();

  // One calling thread's measured latencies (microseconds), grown as needed.
  private static final class Samples {
    double[] v = new double[1 << 14];
    int n = 0;

    void add(double us) {
      if (n == v.length) v = Arrays.copyOf(v, v.length * 2);
      v[n++] = us;
    }
  }

  public static void main(String[] args) throws Exception {
    String url = "amqp://guest:guest@localhost:5672/%2F", queue = "rpc_queue";
    int concurrency = 1, size = 16;
    double seconds = 2, warmup = 0.5;
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--url": url = args[i + 1]; break;
        case "--queue": queue = args[i + 1]; break;
        case "--concurrency": concurrency = Integer.parseInt(args[i + 1]); break;
        case "--size": size = Integer.parseInt(args[i + 1]); break;
        case "--seconds": seconds = Double.parseDouble(args[i + 1]); break;
        case "--warmup": warmup = Double.parseDouble(args[i + 1]); break;
        default: System.err.println("BenchClient: unknown option " + args[i]); System.exit(2);
      }
    }
    ConnectionFactory factory = new ConnectionFactory();
    factory.setUri(url);
    Connection connection = factory.newConnection("amqp-rpc bench: java client");
    Channel channel = connection.createChannel();
    // Direct reply-to (the default), a call given up after 30 s.
    final RpcClient rpc = new RpcClient(channel, "", queue, 30_000);
    final byte[] body = new byte[size];
    Arrays.fill(body, (byte) 'x');

    List<Thread> threads = new ArrayList<>();
    List<Samples> samples = new ArrayList<>();
    for (int t = 0; t < concurrency; ++t) {
      final Samples mine = new Samples();
      samples.add(mine);
      Thread th = new Thread(() -> {
        try {
          while (!stop) {
            long t0 = System.nanoTime();
            rpc.primitiveCall(body);
            long t1 = System.nanoTime();
            if (measuring) mine.add((t1 - t0) / 1000.0);
          }
        } catch (Exception e) {
          error.compareAndSet(null, e.toString());
          stop = true;
        }
      });
      th.setDaemon(true);
      threads.add(th);
    }
    for (Thread th : threads) th.start();
    Thread.sleep((long) (warmup * 1000));
    long from = System.nanoTime();
    measuring = true;
    System.out.println("@measure");
    System.out.flush();
    Thread.sleep((long) (seconds * 1000));
    measuring = false;
    long to = System.nanoTime();
    System.out.println("@end");
    System.out.flush();
    stop = true;
    long deadline = System.currentTimeMillis() + 35_000;
    for (Thread th : threads) th.join(Math.max(1, deadline - System.currentTimeMillis()));

    int total = 0;
    for (Samples s : samples) total += s.n;
    double[] all = new double[total];
    int k = 0;
    for (Samples s : samples) {
      System.arraycopy(s.v, 0, all, k, s.n);
      k += s.n;
    }
    Arrays.sort(all);
    double secs = (to - from) / 1e9;
    StringBuilder out = new StringBuilder();
    out.append("{\"calls\":").append(total)
        .append(",\"seconds\":").append(secs)
        .append(",\"calls_per_s\":").append(secs > 0 ? total / secs : 0)
        .append(",\"p50_us\":").append(percentile(all, 50))
        .append(",\"p99_us\":").append(percentile(all, 99))
        .append(",\"max_us\":").append(total > 0 ? all[total - 1] : 0);
    if (error.get() != null) out.append(",\"error\":\"").append(jsonEscape(error.get())).append('"');
    out.append('}');
    System.out.println(out);
    System.out.flush();
    try {
      connection.close(5000);
    } catch (Exception ignored) {
      // the result is out; a slow close changes nothing
    }
    System.exit(error.get() == null ? 0 : 1);
  }

  // Nearest rank, as the C++ bench computes it.
  private static double percentile(double[] sorted, double p) {
    if (sorted.length == 0) return 0;
    int k = (int) (p / 100.0 * (sorted.length - 1) + 0.5);
    return sorted[k];
  }

  private static String jsonEscape(String s) {
    StringBuilder b = new StringBuilder();
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20) b.append(' ');
      else b.append(c);
    }
    return b.toString();
  }
}
