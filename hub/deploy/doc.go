// Package deploy reads Azure IoT Edge deployment manifests and checks them
// the way IoT Edge would, reporting every problem at once with its JSON
// path and what would fix it.
//
// # What is accepted
//
// A manifest is {"modulesContent": {...}} as written for
// "az iot edge set-modules", or the form the az CLI and the Azure portal
// export, {"content": {"modulesContent": {...}}, "id": …, …}. A leading
// UTF-8 byte order mark is skipped. modulesContent holds:
//
//   - $edgeAgent: "properties.desired" with schemaVersion "1.0" or "1.1"
//     (IoT Edge's edgeAgent accepts no later version; "1.1.0" is read as
//     "1.1") and modules, each with type, settings.image, and optionally
//     settings.createOptions (chunked as createOptions01 … createOptions99
//     when long, joined before use, a JSON object when non-empty), version,
//     status ("running", the default, or "stopped"), restartPolicy
//     ("never", "on-failure", "on-unhealthy" or "always", the default),
//     imagePullPolicy ("on-create" or "never"), startupOrder (0 …
//     4294967295; schema 1.1 only) and env ({"NAME": {"value": …}}).
//     Every module must map to a built-in module through the Resolver,
//     except modules of type "process" (below).
//   - $edgeHub: "properties.desired" with schemaVersion "1.0" … "1.3",
//     routes (name → "FROM … INTO …", or from schema 1.1 on
//     {"route": …, "priority": 0-9, "timeToLiveSecs": n}, 0 meaning the
//     store-and-forward time to live) and storeAndForwardConfiguration
//     ({"timeToLiveSecs": 7200, "storeLimits": {"maxSizeBytes": n}};
//     a negative time to live keeps messages forever).
//   - "<module>": {"properties.desired": {...}}, the desired properties
//     each module's twin starts with, within IoT Hub's size and depth
//     limits (see package twin).
//
// Enumerated values (status, restartPolicy, imagePullPolicy) are compared
// case-insensitively, as Json.NET does for IoT Edge. Members this package
// does not know are ignored, as IoT Edge ignores them, so manifests written
// for newer IoT Edge versions still load. A key written twice in one
// object keeps its last value, as in IoT Hub, with a warning.
//
// # Process modules
//
// tinyedge's own module type "process" runs a program as a child process
// instead of a container image; the settings say which (Module.Process):
//
//	"nodemodule": {
//	  "type": "process", "status": "running", "restartPolicy": "on-failure",
//	  "settings": {"path": "/usr/bin/node", "args": ["app.js"], "workingDir": "/opt/nodemodule"},
//	  "env": {"LOG_LEVEL": {"value": "debug"}}
//	}
//
// path is required: absolute, or a bare program name looked up in PATH.
// args (an array of strings) and workingDir (absolute) are optional.
// status, restartPolicy, startupOrder, version and env work as for any
// module; settings.image and createOptions are ignored (image with a
// warning). The Resolver is not asked about process modules.
//
// # What is ignored
//
// tinyedge is the container runtime, edgeAgent and edgeHub at once, so
// $edgeAgent's runtime (Docker version, logging options,
// registryCredentials) and systemModules are accepted without being
// checked, and their images need not resolve. Of a module, imagePullPolicy
// is checked but has no effect, and createOptions is checked to be JSON
// but its Docker settings (port bindings, mounts, devices) do nothing: a
// built-in module runs inside tinyedge, not in a container.
//
// # Warnings
//
// Manifest.Warnings lists what is allowed but probably a mistake: a route
// that reads from or sends to a module the deployment does not have,
// desired properties for a module that is not deployed, a module without
// status (IoT Edge itself would refuse it), a key written twice, and a
// store-and-forward time to live of 0. A module that no route mentions is
// not a warning: it may talk to nothing but its twin.
//
// # Caveats
//
//   - IoT Edge's edgeAgent requires a module's status and defaults
//     restartPolicy to "on-unhealthy"; tinyedge defaults them to "running"
//     and "always", so a manifest it accepts may still be refused by IoT
//     Edge (the missing status is warned about).
//   - Layered deployments ("properties.desired.modules.x" keys) are not
//     supported; merge the layer into the base manifest.
//   - $edgeHub schema 1.2 and 1.3 members for the MQTT broker and for
//     signed manifests ("integrity") are ignored: tinyedge does not verify
//     manifest signatures.
//   - Environment variable values that are numbers or booleans are turned
//     into strings as .NET would (true becomes "True"); write them as
//     strings to be sure of the text a module sees.
//   - Problem paths use the keys as written; member names are matched
//     case-sensitively, while Json.NET would also accept, say,
//     "SchemaVersion".
package deploy
