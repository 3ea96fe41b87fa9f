// What handing work to another thread and back costs on this machine: the price a server with a
// worker pool pays per batch of requests (I/O thread -> worker -> I/O thread) on top of one that
// runs its handlers on the I/O thread. At 1 call in flight a batch is one call.
#pragma once

namespace bench {

struct HandoffCost {
  // Per round trip: wall time, and the CPU of both threads together.
  double any_core_wall_us = 0, any_core_cpu_us = 0;    // the threads run where the kernel likes
  double same_core_wall_us = 0, same_core_cpu_us = 0;  // both on the caller's core
};

// Two threads pass a token `round_trips` times each way as the server's threads do: a condition
// variable to the "worker", an eventfd read through poll() back to the "I/O thread".
HandoffCost measure_handoff(int round_trips);

}  // namespace bench
