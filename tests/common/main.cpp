// gtest main taking the fixtures directory as the first argument (more
// fixture sets, e.g. made by another torch, may follow).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "fixtures.h"

namespace ptm::test {
std::string& fixtures_dir() {
  static std::string dir;
  return dir;
}
// Further fixture sets: argv[2...] (read by the formats test).
std::vector<std::string>& extra_fixture_dirs() {
  static std::vector<std::string> dirs;
  return dirs;
}
void register_dynamic_tests();
}  // namespace ptm::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) ptm::test::fixtures_dir() = argv[1];
  else if (const char* e = std::getenv("PTM_FIXTURES")) ptm::test::fixtures_dir() = e;
  for (int a = 2; a < argc; ++a) ptm::test::extra_fixture_dirs().push_back(argv[a]);
  ptm::test::register_dynamic_tests();
  return RUN_ALL_TESTS();
}
