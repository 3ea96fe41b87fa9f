// A binary min-heap of deadlines that can also remove any element in O(log n): each element
// remembers its index. The client keeps one entry per call in flight and removes it when the
// reply comes, so answered calls cost nothing until their deadline would have passed.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace amqprpc::detail {

// T has `deadline` (comparable) and `std::size_t heap_index`. The heap stores pointers and owns
// nothing.
template <class T>
class DeadlineHeap {
 public:
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  bool empty() const { return items_.empty(); }
  std::size_t size() const { return items_.size(); }
  T* top() const { return items_.front(); }

  void push(T* item) {
    item->heap_index = items_.size();
    items_.push_back(item);
    sift_up(item->heap_index);
  }

  // Removes item if it is in the heap; a no-op otherwise.
  void remove(T* item) {
    std::size_t i = item->heap_index;
    if (i == npos || i >= items_.size() || items_[i] != item) return;
    std::size_t last = items_.size() - 1;
    if (i != last) {
      place(i, items_[last]);
      items_.pop_back();
      if (!sift_up(i)) sift_down(i);
    } else {
      items_.pop_back();
    }
    item->heap_index = npos;
  }

  T* pop() {
    T* t = items_.front();
    remove(t);
    return t;
  }

  void clear() {
    for (T* t : items_) t->heap_index = npos;
    items_.clear();
  }

 private:
  void place(std::size_t i, T* item) {
    items_[i] = item;
    item->heap_index = i;
  }
  bool sift_up(std::size_t i) {
    bool moved = false;
    while (i > 0) {
      std::size_t parent = (i - 1) / 2;
      if (!(items_[i]->deadline < items_[parent]->deadline)) break;
      T* p = items_[parent];
      place(parent, items_[i]);
      place(i, p);
      i = parent;
      moved = true;
    }
    return moved;
  }
  void sift_down(std::size_t i) {
    for (;;) {
      std::size_t l = 2 * i + 1, r = l + 1, m = i;
      if (l < items_.size() && items_[l]->deadline < items_[m]->deadline) m = l;
      if (r < items_.size() && items_[r]->deadline < items_[m]->deadline) m = r;
      if (m == i) return;
      T* t = items_[m];
      place(m, items_[i]);
      place(i, t);
      i = m;
    }
  }

  std::vector<T*> items_;
};

}  // namespace amqprpc::detail
