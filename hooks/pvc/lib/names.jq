# Name checks shared by select.jq and decide.jq, the same as lib/claim.sh's: values
# that fail them never become a name, a path or a command-line argument.
def uuid_ok: test("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$");
def label_ok: test("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$");
def subdomain_ok: type == "string" and length <= 253
  and test("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$");
def quantity_ok: test("^[0-9]+(\\.[0-9]+)?([KMGTPE]i|[kMGTPE]|[eE][0-9]+)?$");
