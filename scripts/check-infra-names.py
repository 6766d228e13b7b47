"""Part of scripts/check-infra: what the README names exists in the templates.

- The README's Azure parameter and output tables name `param`s and `output`s of
  infra/azure/main.bicep; main.parameters.json sets only parameters that exist.
- The README's AWS variable and output tables name `variable`s and `output`s of infra/aws.
- Every setting of the README's settings table (and every setting name shared/src/config.rs
  reads) is set by both templates, except those the host itself provides; the Azure binding
  settings only in Bicep; DATABASE_URL and SHARE_TOKEN_SECRET only as Key Vault references
  (Azure) and Secrets Manager ARNs (AWS).
- The Lambda host's own settings in infra/aws (stream_settings) are names its config reads.
"""

import glob
import json
import re
import sys

HOST_PROVIDED = {"FUNCTIONS_CUSTOMHANDLER_PORT", "DEVHOST_FUNCTION_KEY"}
# Read by the Functions host for bindings and timers; on AWS the stream mapping and the
# schedules stand in for them. The header-read timeout guards the handler's own socket,
# which the Lambda host does not have (the runtime API brings its requests).
AZURE_ONLY = {"EVENTHUB_NAME", "EVENTHUB_CONSUMER_GROUP", "EventHubConnection",
              "MAINTENANCE_SCHEDULE", "ROLLUP_SCHEDULE", "HTTP_HEADER_READ_TIMEOUT_SECONDS"}
SECRETS = {"DATABASE_URL", "SHARE_TOKEN_SECRET"}

errors = []


def section(text, title):
    """The text under a heading (any level) up to the next heading of the same or higher level."""
    m = re.search(rf"^(#+) {re.escape(title)}\s*$", text, re.M)
    if not m:
        errors.append(f"README has no section '{title}'")
        return ""
    level = len(m.group(1))
    rest = text[m.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def table_names(text, header):
    """Backticked names in the first column of the table whose first header cell is `header`."""
    names, inside = [], False
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            inside = False
            continue
        if cells[0].lower() == header:
            inside = True
            continue
        if inside and not set(cells[0]) <= set("-: "):
            names += re.findall(r"`([^`]+)`", cells[0])
    return names


def block(text, start, what):
    """The lines of a `{ ... }` (or `( ... )`) block whose opening is the last character `start`
    matches."""
    m = re.search(start, text, re.M)
    if not m:
        errors.append(f"{what}: block not found ({start})")
        return ""
    depth, i = 0, m.end() - 1
    opener = text[i]
    pair = {opener: 1, {"{": "}", "(": ")"}[opener]: -1}
    for j in range(i, len(text)):
        depth += pair.get(text[j], 0)
        if depth == 0:
            return text[i : j + 1]
    return text[i:]


readme = open("README.md").read()
bicep = open("infra/azure/main.bicep").read()
tf = "\n".join(open(f).read() for f in sorted(glob.glob("infra/aws/*.tf")))

# --- parameters and outputs -----------------------------------------------------------------
azure = section(readme, "Azure (infra/azure)")
aws = section(readme, "AWS (infra/aws)")
bicep_params = set(re.findall(r"^param (\w+)", bicep, re.M))
bicep_outputs = set(re.findall(r"^output (\w+)", bicep, re.M))
tf_vars = set(re.findall(r'^variable "(\w+)"', tf, re.M))
tf_outputs = set(re.findall(r'^output "(\w+)"', tf, re.M))
checks = [
    ("Azure parameter", table_names(azure, "parameter"), bicep_params, "infra/azure/main.bicep"),
    ("Azure output", table_names(azure, "output"), bicep_outputs, "infra/azure/main.bicep"),
    ("AWS variable", table_names(aws, "variable"), tf_vars, "infra/aws"),
    ("AWS output", table_names(aws, "output"), tf_outputs, "infra/aws"),
]
for what, named, present, where in checks:
    if not named:
        errors.append(f"README names no {what}s (a table whose first column is '{what.split()[1]}')")
    for n in named:
        if n not in present:
            errors.append(f"README names {what} `{n}`, which {where} does not define")
    print(f"  {what}s named in the README: {len(named)}, all defined" if all(n in present for n in named)
          else f"  {what}s: missing some", file=sys.stderr)
params_file = json.load(open("infra/azure/main.parameters.json"))["parameters"]
for n in params_file:
    if n not in bicep_params:
        errors.append(f"main.parameters.json sets `{n}`, which main.bicep does not declare")
required = {n for n in bicep_params
            if not re.search(rf"^param {n} \S+ =", bicep, re.M)}
print(f"  main.parameters.json: {len(params_file)} parameters, all declared; "
      f"required without default: {', '.join(sorted(required)) or 'none'}", file=sys.stderr)
for n in required:
    if n not in params_file and f"{n}=" not in azure:
        errors.append(f"required parameter `{n}` is neither in main.parameters.json nor passed in the README's commands")

# --- settings --------------------------------------------------------------------------------
settings_section = section(readme, "Settings (app settings / environment)")
documented = set()
for n in table_names(settings_section, "setting"):
    documented.add(n)
config = open("shared/src/config.rs").read() + open("shared/src/db/tls.rs").read()
read_by_code = set(re.findall(r'(?:reader\.(?:get|number)\(\s*|ROOT_CERT_SETTING: &str = )"([A-Z][A-Z0-9_]+)"', config))
for n in sorted(read_by_code - documented):
    errors.append(f"shared/src reads setting {n}, which the README's settings table does not list")

bicep_settings = set(re.findall(r"^\s*'?([A-Za-z_][A-Za-z0-9_]*)'?:", block(bicep, r"^var handlerDefaults = \{", "main.bicep")
                                + block(bicep, r"^var hostSettings = \{", "main.bicep"), re.M))
tf_settings = set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=", block(tf, r"^\s*default_settings = \{", "infra/aws")
                             + block(tf, r"^\s*secret_settings = \{", "infra/aws"), re.M))
handler = documented - HOST_PROVIDED - AZURE_ONLY
for n in sorted(handler):
    if n not in bicep_settings:
        errors.append(f"setting {n} (README) is not among the Bicep app settings")
    if n not in tf_settings:
        errors.append(f"setting {n} (README) is not among the AWS functions' environment")
for n in sorted(AZURE_ONLY & documented):
    key = "EventHubConnection__fullyQualifiedNamespace" if n == "EventHubConnection" else n
    if key not in bicep_settings:
        errors.append(f"setting {key} (README) is not among the Bicep app settings")
for n in sorted(SECRETS):
    if not re.search(rf"^\s*{n}: '@Microsoft\.KeyVault\(SecretUri=", bicep, re.M):
        errors.append(f"{n} is not a Key Vault reference in main.bicep")
    if not re.search(rf"^\s*{n}\s*=\s*aws_secretsmanager_secret\.\w+\.arn", tf, re.M):
        errors.append(f"{n} is not a Secrets Manager ARN in infra/aws")
# The Lambda host's own settings the Terraform sets must be names the host reads (a wrong
# name is silently ignored: collect would have no route).
lambda_config = open("functions/lambda/src/config.rs").read()
lambda_reads = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', lambda_config))
stream_settings = set(re.findall(r"\b([A-Z][A-Z0-9_]*)\s*=", block(tf, r"^\s*stream_settings = merge\(", "infra/aws")))
if not stream_settings:
    errors.append("infra/aws sets no stream settings (stream_settings = merge(...) not found)")
for n in sorted(stream_settings - lambda_reads):
    errors.append(f"infra/aws sets {n}, which functions/lambda/src/config.rs does not read")
print(f"  settings: {len(handler)} handler settings in both templates, "
      f"{len(AZURE_ONLY & documented)} binding settings in Bicep, secrets by reference only, "
      f"{len(stream_settings)} Lambda host settings its config reads", file=sys.stderr)

for e in errors:
    print(f"check-infra: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
