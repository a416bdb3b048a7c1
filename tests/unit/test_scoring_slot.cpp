// ptminfer's model-free units: scoring of plain logits (scoring.h) and live
// model replacement with a stand-in model (model_slot.h). No GStreamer, no
// model file.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "model_slot.h"
#include "scoring.h"

namespace ptm::test {
namespace {

std::vector<float> peak(int cls, float height = 5.f, int n = 10) {
  std::vector<float> v(size_t(n), 0.f);
  v[size_t(cls)] = height;
  return v;
}

TEST(Scorer, SoftmaxTopKBestFirst) {
  ScoringSettings s;
  s.top_k = 3;
  Scorer sc(s);
  std::vector<float> v = peak(4);
  v[7] = 2.f;
  v[1] = 1.f;
  const std::vector<Prediction> top = sc.score(v);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].index, 4);
  EXPECT_EQ(top[1].index, 7);
  EXPECT_EQ(top[2].index, 1);
  const float z = std::exp(5.f) + std::exp(2.f) + std::exp(1.f) + 7.f;
  EXPECT_NEAR(top[0].score, std::exp(5.f) / z, 1e-6);
  EXPECT_NEAR(top[1].score, std::exp(2.f) / z, 1e-6);
}

TEST(Scorer, SigmoidThresholdAndLogits) {
  ScoringSettings s;
  s.output = ScoreOutput::Sigmoid;
  s.threshold = 0.6f;
  Scorer sig(s);
  std::vector<Prediction> top = sig.score(peak(2));
  ASSERT_EQ(top.size(), 1u);  // sigmoid(0) = 0.5 is below 0.6
  EXPECT_NEAR(top[0].score, 1.f / (1.f + std::exp(-5.f)), 1e-6);
  s.output = ScoreOutput::Logits;
  s.threshold = -1.f;
  Scorer raw(s);
  std::vector<float> v = peak(2);
  v[5] = -3.f;
  top = raw.score(v);
  ASSERT_EQ(top.size(), 5u);  // 5 and four zeros
  EXPECT_FLOAT_EQ(top[0].score, 5.f);
  for (const Prediction& p : top) EXPECT_GE(p.score, -1.f);
}

TEST(Scorer, TiesKeepTheLowerIndexFirst) {
  Scorer sc;
  const std::vector<Prediction> top = sc.score(std::vector<float>(8, 1.f));
  ASSERT_EQ(top.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(top[size_t(i)].index, i);
}

TEST(Scorer, SmoothingIsAnExponentialAverageOfScores) {
  ScoringSettings s;
  s.output = ScoreOutput::Logits;
  s.smoothing = 0.75;
  s.top_k = 10;
  Scorer sc(s);
  auto score_of = [](const std::vector<Prediction>& top, int64_t cls) {
    for (const Prediction& p : top)
      if (p.index == cls) return p.score;
    return -1.f;
  };
  EXPECT_FLOAT_EQ(score_of(sc.score(peak(3, 8.f)), 3), 8.f);  // the first frame starts the average
  EXPECT_FLOAT_EQ(score_of(sc.score(peak(6, 8.f)), 3), 6.f);  // 0.75 * 8 + 0.25 * 0
  EXPECT_FLOAT_EQ(score_of(sc.score(peak(6, 8.f)), 6), 0.25f * 8.f * 1.75f);
  // Another output function restarts the average.
  s.output = ScoreOutput::Sigmoid;
  sc.update(s);
  EXPECT_NEAR(score_of(sc.score(peak(1, 0.f)), 1), 0.5f, 1e-6);
  sc.reset();
  EXPECT_NEAR(score_of(sc.score(peak(2, 3.f)), 2), 1.f / (1.f + std::exp(-3.f)), 1e-6);
}

TEST(Scorer, HysteresisHoldsTheFirstClass) {
  ScoringSettings s;
  s.hysteresis = 3;
  s.top_k = 2;
  Scorer sc(s);
  EXPECT_EQ(sc.score(peak(1))[0].index, 1);
  EXPECT_EQ(sc.score(peak(2))[0].index, 1);  // 2 leads once
  EXPECT_EQ(sc.score(peak(2))[0].index, 1);  // twice
  EXPECT_EQ(sc.score(peak(1))[0].index, 1);  // interrupted: counting restarts
  EXPECT_EQ(sc.score(peak(2))[0].index, 1);
  EXPECT_EQ(sc.score(peak(2))[0].index, 1);
  const std::vector<Prediction> top = sc.score(peak(2));  // third time in a row: it takes over
  EXPECT_EQ(top[0].index, 2);
  EXPECT_EQ(top.size(), 2u);
  // The held class keeps its own score even when outside the top k.
  s.top_k = 1;
  sc.update(s);
  const std::vector<Prediction> held = sc.score(peak(7));
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].index, 2);
  EXPECT_NEAR(held[0].score, 1.f / (std::exp(5.f) + 9.f), 1e-6);
}

TEST(Scorer, SettingsAreClampedAndAcceptFilters) {
  ScoringSettings s;
  s.top_k = 0;
  s.smoothing = 5;
  s.hysteresis = -2;
  s.threshold = 0.5f;
  Scorer sc(s);
  EXPECT_EQ(sc.settings().top_k, 1);
  EXPECT_DOUBLE_EQ(sc.settings().smoothing, 0.999);
  EXPECT_EQ(sc.settings().hysteresis, 0);
  EXPECT_TRUE(sc.needs_all_scores());
  const std::vector<Prediction> kept = sc.accept({{3, 0.9f}, {1, 0.5f}, {8, 0.1f}});
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[1].index, 1);
}

// A stand-in model: its number, made by a loader the test can hold.
struct Fake {
  int id;
};

struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = true;
  std::vector<int> started;  // the requests whose load began
  void hold() {
    std::lock_guard<std::mutex> g(m);
    open = false;
  }
  void release() {
    {
      std::lock_guard<std::mutex> g(m);
      open = true;
    }
    cv.notify_all();
  }
  void enter(int id) {
    std::unique_lock<std::mutex> g(m);
    started.push_back(id);
    cv.notify_all();
    cv.wait(g, [&] { return open; });
  }
  void wait_started(size_t n) {
    std::unique_lock<std::mutex> g(m);
    cv.wait(g, [&] { return started.size() >= n; });
  }
};

struct Reports {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::pair<int, std::string>> seen;  // request, error ("" when loaded)
  void add(int id, const std::string& e) {
    std::lock_guard<std::mutex> g(m);
    seen.emplace_back(id, e);
    cv.notify_all();
  }
  void wait(size_t n) {
    std::unique_lock<std::mutex> g(m);
    cv.wait(g, [&] { return seen.size() >= n; });
  }
};

// The note of a loaded Fake: its number.
using Slot = ModelSlot<Fake, int, int>;

// `describing`, when given, holds each note being made.
Slot make_slot(Gate& gate, Reports& reports, Gate* describing = nullptr) {
  return Slot(
      [&](const int& id) {
        gate.enter(id);
        if (id < 0) throw std::runtime_error("no such model " + std::to_string(id));
        return std::make_unique<Fake>(Fake{id});
      },
      [describing](const Fake& m) {
        if (describing) describing->enter(m.id);
        return m.id;
      },
      [&](const int& id, const int* note, const std::string& e) {
        EXPECT_EQ(note != nullptr, e.empty());
        if (note) {
          EXPECT_EQ(*note, id);
        }
        reports.add(id, e);
      });
}

TEST(ModelSlot, LoadsInTheBackgroundAndHandsOverOnce) {
  Gate gate;
  Reports reports;
  Slot slot = make_slot(gate, reports);
  EXPECT_EQ(slot.take(), nullptr);
  gate.hold();
  slot.request(1);
  gate.wait_started(1);
  // The load is held: taking returns at once, with nothing.
  EXPECT_EQ(slot.take(), nullptr);
  EXPECT_TRUE(slot.busy());
  gate.release();
  reports.wait(1);
  std::shared_ptr<Fake> m = slot.take();
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->id, 1);
  EXPECT_EQ(slot.take(), nullptr);  // handed over once
  EXPECT_FALSE(slot.busy());
}

// What the report tells is read from the model before the streaming side
// can take it (and change it): while the note is being made, nothing can
// be taken; the report comes once the model can be.
TEST(ModelSlot, TheNoteIsMadeBeforeTheModelCanBeTaken) {
  Gate gate, describing;
  Reports reports;
  Slot slot = make_slot(gate, reports, &describing);
  describing.hold();
  slot.request(7);
  describing.wait_started(1);
  EXPECT_EQ(slot.take(), nullptr);
  EXPECT_TRUE(reports.seen.empty());
  describing.release();
  reports.wait(1);
  EXPECT_EQ(reports.seen[0], std::make_pair(7, std::string()));
  std::shared_ptr<Fake> m = slot.take();
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->id, 7);
}

TEST(ModelSlot, TheNewestRequestReplacesOneNotYetLoading) {
  Gate gate;
  Reports reports;
  Slot slot = make_slot(gate, reports);
  gate.hold();
  slot.request(1);
  gate.wait_started(1);
  slot.request(2);  // waits
  slot.request(3);  // replaces 2
  gate.release();
  reports.wait(2);
  EXPECT_EQ(gate.started, (std::vector<int>{1, 3}));
  ASSERT_EQ(reports.seen.size(), 2u);
  // Two loaded before the streaming side looked: the newest is taken.
  std::shared_ptr<Fake> m = slot.take();
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->id, 3);
}

TEST(ModelSlot, AFailedLoadIsReportedAndLeavesNothingToTake) {
  Gate gate;
  Reports reports;
  Slot slot = make_slot(gate, reports);
  slot.request(-4);
  reports.wait(1);
  EXPECT_EQ(reports.seen[0].second, "no such model -4");
  EXPECT_EQ(slot.take(), nullptr);
  slot.request(5);  // the thread still serves
  reports.wait(2);
  EXPECT_EQ(slot.take()->id, 5);
}

TEST(ModelSlot, StopWaitsForALoadAndDropsItUnreported) {
  Gate gate;
  Reports reports;
  Slot slot = make_slot(gate, reports);
  gate.hold();
  slot.request(1);
  gate.wait_started(1);
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    slot.stop();
    stopped = true;
  });
  // stop() cannot return while the load is held: released only after the
  // stopper has had every chance to run.
  for (int i = 0; i < 50 && !stopped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_FALSE(stopped);
  gate.release();
  stopper.join();
  EXPECT_TRUE(stopped);
  EXPECT_EQ(slot.take(), nullptr);
  EXPECT_TRUE(reports.seen.empty());
  slot.request(2);  // usable again
  reports.wait(1);
  EXPECT_EQ(slot.take()->id, 2);
}

std::string temp_path(const char* name) {
  return std::string(::testing::TempDir()) + "/ptm-slot-" + std::to_string(::getpid()) + "-" + name;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

TEST(FileWatch, ReplacementsAreSeenOncePerPeriod) {
  const std::string path = temp_path("model.pth"), tmp = path + ".tmp";
  write_file(path, "one");
  FileWatch w(1000);
  w.watch(path);
  EXPECT_FALSE(w.changed(path, 0));  // unchanged
  write_file(tmp, "second version");
  ASSERT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);
  EXPECT_FALSE(w.changed(path, 500));     // within the period of the last look
  EXPECT_TRUE(w.changed(path, 1000));     // seen
  EXPECT_FALSE(w.changed(path, 2000));    // once
  EXPECT_FALSE(w.changed("other", 3000)); // another file is not watched
  write_file(path, "");                   // written in place, not finished
  EXPECT_FALSE(w.changed(path, 4000));
  write_file(path, "third version, longer");
  EXPECT_TRUE(w.changed(path, 5000));
  // A version read by a load counts as seen.
  write_file(path, "fourth");
  w.reading(path);
  EXPECT_FALSE(w.changed(path, 6000));
  std::remove(path.c_str());
}

}  // namespace

void register_dynamic_tests() {}
}  // namespace ptm::test
