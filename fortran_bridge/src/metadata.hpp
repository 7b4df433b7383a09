// paramlib.json: the model metadata contract (see DESIGN.md "Model file").
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

namespace paramlib {

// Level orders the bridge knows (paramlib.export.LEVEL_ORDERS); the first is the contract's.
inline const char *const kLevelOrders[] = {"surface_to_top", "top_to_surface"};

// Longest field name or units accepted, so the Fortran API's fixed buffers
// (PARAMLIB_MAX_NAME_LEN = 256 with the NUL) never truncate one.
constexpr std::size_t kMaxNameLength = 255;

struct FieldSpec {
  std::string name;
  std::string units;
  int nlev = 1;
  std::string level_order = kLevelOrders[0];
};

struct ModelMetadata {
  std::string model_kind;
  std::vector<FieldSpec> inputs;
  std::vector<FieldSpec> outputs;
  int ensemble_size = 1;
  std::string json;  // the file as stored, for pl_model_metadata_json
  std::unordered_map<std::string, int> input_index;
  std::unordered_map<std::string, int> output_index;
};

// Parses and validates the JSON text; throws std::runtime_error naming the key.
ModelMetadata parse_metadata(const std::string &text);

// The training range of one input, one value per level (paramlib.json "valid_range").
struct ValidRange {
  std::vector<double> lo, hi;
};

// The range recorded for input `field` (nlev levels) in the JSON text; false when there is
// none. Read on demand rather than at load, so a malformed range fails only the callers that
// ask for it; throws std::runtime_error naming the key when the entry is malformed.
bool find_valid_range(const std::string &text, const FieldSpec &field, ValidRange &out);

// True for a level order in kLevelOrders.
bool known_level_order(const std::string &order);

// "a, b" of kLevelOrders, for messages.
std::string level_order_list();

// Units compared after collapsing whitespace, so "K  s-1" matches "K s-1".
bool same_units(const std::string &a, const std::string &b);

}  // namespace paramlib
