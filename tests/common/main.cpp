// gtest main taking the fixtures directory as the first argument.
#include <gtest/gtest.h>

#include <cstdlib>

#include "fixtures.h"

namespace ptm::test {
std::string& fixtures_dir() {
  static std::string dir;
  return dir;
}
void register_dynamic_tests();
}  // namespace ptm::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) ptm::test::fixtures_dir() = argv[1];
  else if (const char* e = std::getenv("PTM_FIXTURES")) ptm::test::fixtures_dir() = e;
  ptm::test::register_dynamic_tests();
  return RUN_ALL_TESTS();
}
