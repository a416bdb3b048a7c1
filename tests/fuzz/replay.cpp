// Drives a fuzz target (targets.cpp) without libFuzzer, for the regular
// build and CI: every file of the corpus and of the regressions as it is,
// then MUTATIONS random mutations of each (bit flips, truncations,
// overwrites, insertions; a fixed seed, so a run repeats). A memory error
// or an exception other than ModelError aborts with the sanitizer's report.
//   fuzz-TARGET MUTATIONS FILE_OR_DIRECTORY...
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n);
const char* ptm_fuzz_target();
void ptm_fuzz_counts(long* loaded, long* rejected, long* skipped);

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MUTATIONS FILE_OR_DIRECTORY...\n", argv[0]);
    return 2;
  }
  const int mutations = std::stoi(argv[1]);
  std::vector<std::string> files;  // each directory's files in name order
  for (int a = 2; a < argc; ++a) {
    if (!std::filesystem::exists(argv[a])) {
      std::fprintf(stderr, "%s: %s does not exist\n", argv[0], argv[a]);
      return 2;
    }
    if (!std::filesystem::is_directory(argv[a])) {
      files.push_back(argv[a]);
      continue;
    }
    std::vector<std::string> in_dir;
    for (const auto& f : std::filesystem::directory_iterator(argv[a]))
      if (f.is_regular_file() && f.path().filename() != "stamp") in_dir.push_back(f.path().string());
    std::sort(in_dir.begin(), in_dir.end());
    files.insert(files.end(), in_dir.begin(), in_dir.end());
  }
  if (files.empty()) {
    std::fprintf(stderr, "%s: no input files\n", argv[0]);
    return 2;
  }
  std::mt19937_64 r(42);
  long runs = 0;
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary);
    const std::string seed((std::istreambuf_iterator<char>(in)), {});
    auto run = [&](const std::string& d) {
      LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(d.data()), d.size());
      ++runs;
    };
    run(seed);
    for (int it = 0; it < mutations && !seed.empty(); ++it) {
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
      run(d);
    }
  }
  long loaded, rejected, skipped;
  ptm_fuzz_counts(&loaded, &rejected, &skipped);
  std::printf("%s: %zu files, %ld inputs: %ld accepted, %ld rejected with a message, %ld not this reader's; "
              "no memory error\n",
              ptm_fuzz_target(), files.size(), runs, loaded, rejected, skipped);
  return 0;
}
