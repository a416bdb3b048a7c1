// A reader for the uncompressed ("stored") zip archives torch.save and
// torch.jit.save write. It validates the central directory and every entry's
// byte range against the file size before anything is used, so a corrupt or
// hostile archive cannot make it allocate or read out of bounds. Each stored
// entry's local header and data descriptor must agree with the central
// directory and no two entries may overlap: these catch damage even in files
// saved without CRCs.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "bytes.h"

namespace ptm {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;
  uint32_t crc32 = 0;
  uint64_t size = 0;         // uncompressed
  uint64_t data_offset = 0;  // into the file, valid only for stored entries
};

class ZipArchive {
 public:
  ZipArchive(Bytes file, std::string path);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;
  // The bytes of a stored entry, checked against its CRC when `verify`
  // (unless the file has no CRCs, see crc_absent()).
  const uint8_t* data(const ZipEntry& e, bool verify) const;
  const Bytes& file() const { return file_; }
  // True when every non-empty entry's CRC is 0: the writer did not compute
  // them (torch.serialization.set_crc32_options(False), torch >= 2.6). A
  // file where only some are 0 is checked as usual.
  bool crc_absent() const { return crc_absent_; }
  // Checks every stored entry's CRC, spread over a few threads.
  void verify_all() const;

 private:
  Bytes file_;
  std::string path_;
  std::vector<ZipEntry> entries_;
  bool crc_absent_ = false;
  std::unordered_map<std::string, size_t> index_;  // name -> entries_ position
};

bool looks_like_zip(const std::string& head);

}  // namespace ptm
