// SHA-256 (FIPS 180-4) for pinning model files: no crypto library dependency.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace paramlib {

// The digest of n bytes as 64 lowercase hex characters.
std::string sha256_hex(const void *data, std::size_t n);

}  // namespace paramlib
