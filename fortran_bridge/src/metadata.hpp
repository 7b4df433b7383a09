// paramlib.json: the model metadata contract (see DESIGN.md "Model file").
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

namespace paramlib {

struct FieldSpec {
  std::string name;
  std::string units;
  int nlev = 1;
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

// Units compared after collapsing whitespace, so "K  s-1" matches "K s-1".
bool same_units(const std::string &a, const std::string &b);

}  // namespace paramlib
