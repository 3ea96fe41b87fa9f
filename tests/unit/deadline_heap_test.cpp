#include "client/deadline_heap.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace {

struct Item {
  int deadline;
  std::size_t heap_index = amqprpc::detail::DeadlineHeap<Item>::npos;
};

}  // namespace

TEST(DeadlineHeap, PopsInDeadlineOrder) {
  std::vector<Item> items{{5}, {1}, {4}, {2}, {3}};
  amqprpc::detail::DeadlineHeap<Item> heap;
  for (auto& i : items) heap.push(&i);
  std::vector<int> order;
  while (!heap.empty()) order.push_back(heap.pop()->deadline);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3, 4, 5}));
}

TEST(DeadlineHeap, RemovingAnyElementKeepsTheOrderOfTheRest) {
  std::mt19937 rng(42);
  for (int round = 0; round < 200; ++round) {
    std::vector<Item> items(50);
    for (auto& i : items) i.deadline = static_cast<int>(rng() % 20);  // with duplicates
    amqprpc::detail::DeadlineHeap<Item> heap;
    for (auto& i : items) heap.push(&i);
    std::vector<int> kept;
    for (std::size_t k = 0; k < items.size(); ++k) {
      if (rng() % 2) {
        heap.remove(&items[k]);
        EXPECT_EQ(items[k].heap_index, heap.npos);
        heap.remove(&items[k]);  // twice: a no-op
      } else {
        kept.push_back(items[k].deadline);
      }
    }
    ASSERT_EQ(heap.size(), kept.size());
    std::sort(kept.begin(), kept.end());
    std::vector<int> popped;
    while (!heap.empty()) popped.push_back(heap.pop()->deadline);
    EXPECT_EQ(popped, kept);
  }
}

TEST(DeadlineHeap, ClearForgetsEveryElement) {
  Item a{1}, b{2};
  amqprpc::detail::DeadlineHeap<Item> heap;
  heap.push(&a);
  heap.push(&b);
  heap.clear();
  EXPECT_TRUE(heap.empty());
  EXPECT_EQ(a.heap_index, heap.npos);
  heap.remove(&a);  // not in the heap any more: no-op
  EXPECT_TRUE(heap.empty());
}
