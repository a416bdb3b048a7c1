// Mutation fuzzing of the model-file readers, built with AddressSanitizer
// and UndefinedBehaviorSanitizer: bit flips, truncations, overwrites and
// insertions of small seed files in every format. Any memory error aborts;
// every mutated file must load or fail with ModelError.
//   fuzz-readers ITERATIONS SEED_FILE_OR_DIRECTORY...
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "models/checkpoint.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: fuzz-readers ITERATIONS SEED_FILE_OR_DIRECTORY...\n");
    return 2;
  }
  const int iterations = std::stoi(argv[1]);
  std::vector<std::string> seeds;  // a directory's files in name order (its stamp left out)
  for (int a = 2; a < argc; ++a) {
    if (!std::filesystem::is_directory(argv[a])) {
      seeds.push_back(argv[a]);
      continue;
    }
    std::vector<std::string> files;
    for (const auto& f : std::filesystem::directory_iterator(argv[a]))
      if (f.is_regular_file() && f.path().filename() != "stamp") files.push_back(f.path().string());
    std::sort(files.begin(), files.end());
    seeds.insert(seeds.end(), files.begin(), files.end());
  }
  const std::string tmp = "/tmp/ptm-fuzz-" + std::to_string(::getpid());
  std::mt19937_64 r(42);
  int loaded = 0, rejected = 0;
  for (const std::string& seed_path : seeds) {
    std::ifstream in(seed_path, std::ios::binary);
    const std::string seed((std::istreambuf_iterator<char>(in)), {});
    if (seed.empty()) return 2;
    std::printf("seed %s\n", seed_path.c_str());
    for (int it = 0; it < iterations; ++it) {
      std::string d = seed;
      switch (r() % 4) {
        case 0:
          for (int k = 0, n = 1 + int(r() % 8); k < n; ++k) d[r() % d.size()] ^= char(1 << (r() % 8));
          break;
        case 1: d.resize(r() % d.size()); break;
        case 2: {
          const size_t p = r() % d.size();
          d[p] = char(r());
          d[(p + 1) % d.size()] = char(0xff);
          break;
        }
        default: d.insert(r() % d.size(), std::string(1 + r() % 16, char(r()))); break;
      }
      std::ofstream(tmp, std::ios::binary | std::ios::trunc).write(d.data(), std::streamsize(d.size()));
      try {
        ptm::ReadOptions o;
        o.verify_checksums = it % 2;
        ptm::Checkpoint ck = ptm::read_checkpoint(tmp, o);
        for (const auto& e : ck.state.entries) (void)e.tensor.sum().item<double>();  // touch every byte
        ++loaded;
      } catch (const ptm::ModelError&) {
        ++rejected;
      }
    }
  }
  ::unlink(tmp.c_str());
  std::printf("%zu seeds, %d mutated files: %d loaded, %d rejected with a message, no memory error\n", seeds.size(),
              loaded + rejected, loaded, rejected);
  return 0;
}
