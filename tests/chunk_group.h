// An in-process context-parallel group for tests: chunk c of K runs on its own thread and
// exchanges states through shared slots, exactly as MPI ranks do through MPI_Exscan.
#pragma once

#include <barrier>
#include <functional>
#include <thread>
#include <vector>

#include "polysketch/attention.h"

namespace polysketch::test {

template <typename T>
class ChunkGroup {
 public:
  explicit ChunkGroup(int chunks) : slots_(static_cast<size_t>(chunks)), sync_(chunks) {}

  class Member : public ChunkExchangeT<T> {
   public:
    Member(ChunkGroup* group, int index) : group_(group), index_(index) {}
    void exclusive_sum(T* values, int64_t count, bool reverse) override {
      auto& slots = group_->slots_;
      slots[static_cast<size_t>(index_)].assign(values, values + count);
      group_->sync_.arrive_and_wait();
      std::fill(values, values + count, T(0));
      const int k = static_cast<int>(slots.size());
      for (int j = reverse ? index_ + 1 : 0; j < (reverse ? k : index_); ++j)
        for (int64_t i = 0; i < count; ++i) values[i] += slots[static_cast<size_t>(j)][i];
      group_->sync_.arrive_and_wait();  // nobody refills a slot before everyone has read it
    }

   private:
    ChunkGroup* group_;
    int index_;
  };

  // Runs body(chunk, exchange) for every chunk on its own thread; returns when all are done.
  void run(const std::function<void(int, ChunkExchangeT<T>&)>& body) {
    std::vector<std::thread> threads;
    for (int c = 0; c < static_cast<int>(slots_.size()); ++c)
      threads.emplace_back([this, c, &body] {
        Member member(this, c);
        body(c, member);
      });
    for (auto& t : threads) t.join();
  }

 private:
  std::vector<std::vector<T>> slots_;
  std::barrier<> sync_;
};

}  // namespace polysketch::test
