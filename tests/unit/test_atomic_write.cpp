// Crash safety: a child process rewrites one output path over and over as
// ptmtrainsink does (weights with their labels inside, then the labels
// file beside), alternating two different models (~16 MB each, two and
// three labels); the parent kills it with SIGKILL at random moments. After
// every kill the path must hold one of the two complete files, never a
// torn one, with that model's own labels.
//   test-atomic-write DIR            (parent)
//   test-atomic-write --child PATH   (writer)
#include <ATen/ATen.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "models/checkpoint.h"
#include "models/labels.h"
#include "models/writer.h"

namespace {

ptm::StateDict make(float marker) {
  ptm::StateDict sd;
  sd.entries.push_back({"marker", at::full({1}, marker)});
  sd.entries.push_back({"fc.weight", at::full({1000, 4096}, marker)});
  return sd;
}

const std::vector<std::string> kLabelsA = {"cat", "dog"}, kLabelsB = {"ball", "car", "tree"};

int child(const std::string& path) {
  const ptm::StateDict a = make(1.f), b = make(2.f);
  for (uint64_t i = 0;; ++i) ptm::save_model_and_labels(path, i % 2 ? b : a, i % 2 ? kLabelsB : kLabelsA);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--child") return child(argv[2]);
  if (argc != 2) {
    std::fprintf(stderr, "usage: test-atomic-write DIR\n");
    return 2;
  }
  std::filesystem::create_directories(argv[1]);
  const std::string path = std::string(argv[1]) + "/model.pth";
  ptm::save_model_and_labels(path, make(1.f), kLabelsA);
  std::mt19937 rng(1234);
  int passed = 0, failed = 0, killed_mid_write = 0, beside_stale = 0;
  for (int round = 0; round < 40; ++round) {
    const pid_t pid = fork();
    if (pid == 0) {
      execl("/proc/self/exe", argv[0], "--child", path.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 400));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    for (const auto& e : std::filesystem::directory_iterator(argv[1]))
      if (e.path().filename().string().find(".tmp-") != std::string::npos) {
        ++killed_mid_write;  // a leftover temp file: the kill hit a write
        std::filesystem::remove(e.path());
      }
    try {
      ptm::Checkpoint ck = ptm::read_checkpoint(path);
      const float m = ck.state.find("marker")->item<float>();
      const bool whole = (m == 1.f || m == 2.f) && ck.state.find("fc.weight")->eq(m).all().item<bool>();
      const bool paired = ck.labels == (m == 1.f ? kLabelsA : kLabelsB);
      (whole && paired) ? ++passed : ++failed;
      if (!whole) std::printf("FAIL round %d: mixed contents\n", round);
      if (!paired) std::printf("FAIL round %d: the weights came with another model's labels\n", round);
      // The file beside may lag (the kill fell between the two writes): the
      // labels inside are the ones read.
      if (ptm::read_labels_file(ptm::labels_path_beside(path)) != ck.labels) ++beside_stale;
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL round %d: %s\n", round, e.what());
    }
  }
  std::printf("40 SIGKILLs during rewrites (%d hit a write in progress, %d fell between the weights and the labels "
              "file): the weights were complete and with their own labels every time\n",
              killed_mid_write, beside_stale);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
