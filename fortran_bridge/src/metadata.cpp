#include "metadata.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace paramlib {
namespace {

using nlohmann::json;

const json &require(const json &obj, const char *key, const std::string &where) {
  if (!obj.is_object() || !obj.contains(key)) throw std::runtime_error(where + ": missing key '" + key + "'");
  return obj.at(key);
}

std::vector<FieldSpec> parse_fields(const json &root, const char *key, std::unordered_map<std::string, int> &index) {
  const json &list = require(root, key, "paramlib.json");
  if (!list.is_array() || list.empty())
    throw std::runtime_error(std::string("paramlib.json: '") + key + "' must be a non-empty list of fields");
  std::vector<FieldSpec> fields;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string where = std::string("paramlib.json: ") + key + "[" + std::to_string(i) + "]";
    FieldSpec f;
    const json &name = require(list[i], "name", where);
    const json &units = require(list[i], "units", where);
    const json &nlev = require(list[i], "nlev", where);
    if (!name.is_string() || name.get<std::string>().empty())
      throw std::runtime_error(where + ": 'name' must be a non-empty string");
    if (!units.is_string()) throw std::runtime_error(where + ": 'units' must be a string");
    if (!nlev.is_number_integer() || nlev.get<int>() < 1)
      throw std::runtime_error(where + ": 'nlev' must be an integer >= 1");
    f.name = name.get<std::string>();
    f.units = units.get<std::string>();
    f.nlev = nlev.get<int>();
    if (f.name.size() > kMaxNameLength || f.units.size() > kMaxNameLength)
      throw std::runtime_error(where + ": 'name' and 'units' must be at most " + std::to_string(kMaxNameLength) +
                               " characters");
    // Absent in files written before level orders were recorded: the contract's order.
    if (list[i].contains("level_order")) {
      const json &order = list[i]["level_order"];
      if (!order.is_string() || !known_level_order(order.get<std::string>()))
        throw std::runtime_error(where + ": 'level_order' " + order.dump() + " is not one this bridge knows (" +
                                 level_order_list() + ")");
      f.level_order = order.get<std::string>();
    }
    if (!index.emplace(f.name, static_cast<int>(i)).second)
      throw std::runtime_error(where + ": duplicate field name '" + f.name + "'");
    fields.push_back(f);
  }
  return fields;
}

std::string collapse_spaces(const std::string &s) {
  std::istringstream in(s);
  std::string word, out;
  while (in >> word) out += (out.empty() ? "" : " ") + word;
  return out;
}

}  // namespace

ModelMetadata parse_metadata(const std::string &text) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception &e) {
    throw std::runtime_error(std::string("paramlib.json is not valid JSON: ") + e.what());
  }
  const json &version = require(root, "format_version", "paramlib.json");
  if (!version.is_number_integer() || version.get<int>() != 1)
    throw std::runtime_error("paramlib.json: format_version " + version.dump() +
                             " is not supported (this bridge reads version 1)");
  ModelMetadata m;
  m.json = text;
  if (root.contains("model_kind") && root["model_kind"].is_string())
    m.model_kind = root["model_kind"].get<std::string>();
  m.inputs = parse_fields(root, "inputs", m.input_index);
  m.outputs = parse_fields(root, "outputs", m.output_index);
  if (root.contains("ensemble_size")) {
    const json &e = root["ensemble_size"];
    if (!e.is_number_integer() || e.get<int>() < 1)
      throw std::runtime_error("paramlib.json: 'ensemble_size' must be an integer >= 1");
    m.ensemble_size = e.get<int>();
  }
  return m;
}

bool find_valid_range(const std::string &text, const FieldSpec &field, ValidRange &out) {
  const json root = json::parse(text);  // parse_metadata accepted this text at load
  if (!root.contains("valid_range")) return false;
  const json &all = root["valid_range"];
  if (!all.is_object()) throw std::runtime_error("paramlib.json: 'valid_range' must be an object");
  if (!all.contains(field.name)) return false;
  const std::string where = "paramlib.json: valid_range." + field.name;
  const auto levels = [&](const char *key) {
    const json &values = require(all[field.name], key, where);
    if (!values.is_array() || values.size() != static_cast<std::size_t>(field.nlev) ||
        !std::all_of(values.begin(), values.end(), [](const json &v) { return v.is_number(); }))
      throw std::runtime_error(where + "." + key + ": expected a list of " + std::to_string(field.nlev) +
                               " numbers (one per level of the input)");
    return values.get<std::vector<double>>();
  };
  out.lo = levels("min");
  out.hi = levels("max");
  for (int k = 0; k < field.nlev; ++k)
    if (!(out.lo[k] <= out.hi[k])) throw std::runtime_error(where + ": min > max at level " + std::to_string(k));
  return true;
}

bool known_level_order(const std::string &order) {
  for (const char *known : kLevelOrders)
    if (order == known) return true;
  return false;
}

std::string level_order_list() {
  std::string s;
  for (const char *known : kLevelOrders) s += (s.empty() ? "" : ", ") + std::string(known);
  return s;
}

bool same_units(const std::string &a, const std::string &b) { return collapse_spaces(a) == collapse_spaces(b); }

}  // namespace paramlib
