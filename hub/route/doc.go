// Package route implements edgeHub's route language, as written in the
// routes of a deployment manifest:
//
//	[SELECT * ]FROM <source> [WHERE <condition>] INTO <sink>
//
// A route is parsed and compiled once (Parse) and then evaluated against
// each message (Route.Match) without further parsing or allocation. The
// behaviour follows edgeHub's own implementation
// (Microsoft.Azure.Devices.Routing.Core in Azure/iotedge: the ANTLR
// grammars Route.g4, Condition.g4 and GrammarLexer.g4, the compiler's
// ConditionVisitor and the builtins) rather than the IoT Hub
// documentation where the two differ; the differences that remain are
// listed under Caveats.
//
// # Routes
//
// Keywords (SELECT, FROM, WHERE, INTO, AND, OR, NOT, TRUE, FALSE, NULL,
// UNDEFINED), function names and BrokeredEndpoint are case-insensitive.
// Comments /* … */ may appear wherever white space may, except between
// FROM and the end of the source path: there "/*" is part of the path.
//
// The source selects messages by where they come from:
//
//	/*                                   everything, twin change notifications included
//	/messages/* or /messages             device and module telemetry
//	/messages/modules/*                  messages from any module
//	/messages/modules/{m}/*              messages from module m, on any output or none
//	/messages/modules/{m}/outputs/*      messages from module m sent on an output
//	/messages/modules/{m}/outputs/{o}    messages from module m on output o
//	/twinChangeNotifications             twin change notifications
//
// A message's source (message.Message.Source) matches when it starts with
// the route's source, less a trailing "/*", at a path segment boundary,
// ignoring case: /messages/modules/filter matches
// /messages/modules/filter/outputs/o1 but not /messages/modules/filterX.
// edgeHub matches /* against twin change notifications too (its source
// "/" is a prefix of every source), and so does tinyedge.
//
// The sink is $upstream (IoT Hub) or
// BrokeredEndpoint("/modules/{m}/inputs/{i}"), input i of module m.
//
// # Conditions
//
// Operators, loosest first: ?? (coalesce: the left operand unless it is
// undefined); OR; AND; = != <>; < <= > >=; + - || (string
// concatenation); * / %; unary - and NOT. Binary operators associate to
// the left. NOT binds tighter than comparisons, as in edgeHub: write
// NOT (a = b).
//
// Operands:
//
//	temp                 application property "temp" (a string)
//	$connectionModuleId  system property (a string); any name message.SystemNames lists
//	{$messageId}         the system property even when an application property "$messageId" exists
//	$body.a.b[0].c       a value in the JSON body
//	'text', "text"       strings, with escapes \\ \' \" \/ \b \f \n \r \t \uXXXX
//	12, -3, 0x1F, 1.5, .5, 1e3
//	true, false, null, undefined
//	f(x, …)              a built-in function
//
// Application property names are looked up ignoring case, as edgeHub's
// property dictionaries do. A $name is first looked up as an application
// property named "$name" and only then as the system property, as in
// edgeHub; {$name} skips the application property.
//
// Names follow edgeHub's lexer: a name is a run of any characters but
// ()<>@,;:\"/[]?={} and white space, so "x-custom" is one name, and so
// would "temp-1" be. Put spaces around operators. Where edgeHub would
// silently read such a run as a property that never exists, Parse
// reports it instead: a name that starts like a number ("3-1", "1.2.3"),
// or with an operator or quote ("-temp", "'a'||'b'"), or contains "||".
//
// # Types
//
// Values are undefined, null, bool, number (float64) or string.
// edgeHub checks types when it compiles a route, and so does Parse:
// properties are strings and literals have their own type, so
// temp > 25 is an error (write as_number(temp) > 25), and so are
// 'a' + 1, NOT alert and abs('x'). Only $body values have their type
// decided per message; an operation on a $body value of the wrong type
// is undefined.
//
// Undefined spreads: a missing property is undefined, and any operator or
// function with an undefined operand gives undefined, except: false AND
// undefined is false; true OR undefined is true; is_defined, is_bool,
// is_null, is_number and is_string answer for undefined too; and ?? picks
// its right operand. NOT undefined is undefined. Null with bools (not
// with $body values): null AND x is null, null OR x is x, NOT null is
// true. With a $body value on either side, AND and OR need two bools and
// are otherwise undefined (so false AND $body.x is undefined when x is
// not a bool). A route matches only when its condition is the bool true.
//
// Numbers compare with numbers, strings with strings (ordinally, by UTF-16
// code units, as .NET does), bools with bools (false < true), null with
// null (equal). A division by zero is ±Infinity; 0/0, 3 % 0 and
// sqrt(-1) are undefined (edgeHub represents an undefined number as NaN).
//
// # $body
//
// The body can be queried only when $contentType is application/json and
// $contentEncoding is utf-8, utf-16 or utf-32 (both ignoring case, as
// edgeHub compares them; UTF-16 and UTF-32 are little-endian unless the
// body starts with a big-endian byte order mark), and when it is a valid
// JSON object. Otherwise every $body query is undefined. Member names
// match exactly; of duplicate members the last counts. A path that is not
// in the body is null (edgeHub's JSON path search finds nothing); a path
// that ends at an object or array is undefined. The body is checked at
// most once per Env, and only when a route reads it.
//
// # Functions
//
//	abs(n) exp(n) power(n, m) square(n) ceiling(n) floor(n) sign(n) sqrt(n)
//	as_number(s)    s as a number, as .NET's double.TryParse reads it, or undefined
//	is_bool(x) is_defined(x) is_null(x) is_number(x) is_string(x)
//	concat(s, t, …) length(s) lower(s) upper(s)
//	substring(s, start) substring(s, start, length)   UTF-16 indexes, as in .NET
//	index_of(s, t) starts_with(s, t) ends_with(s, t) contains(s, t)
//	twin_change_includes(properties.desired.x)
//
// twin_change_includes is only allowed in routes FROM
// /twinChangeNotifications; its argument is a path written as a name,
// starting properties.desired., properties.reported. or tags.; it is true
// when the notification's body has that path (even with a null value),
// false when it does not, and undefined when the body cannot be queried.
//
// # Caveats
//
// Where tinyedge knowingly differs from edgeHub:
//
//   - TRUE, FALSE, NULL and UNDEFINED are keywords in any case; edgeHub
//     only knows them in lower case and reads TRUE as a property name.
//   - Strings accept the escapes \/ \b \f \n \r \t, which edgeHub rejects.
//   - Parse rejects what edgeHub accepts but can never match or deliver:
//     sources other than the forms above, "*" inside a source segment,
//     names that look like malformed numbers or start with an operator,
//     the exponent-only "numbers" like e5 edgeHub makes undefined,
//     BrokeredEndpoint addresses whose first and third segments are not
//     modules and inputs, unknown $properties (edgeHub looks them up as
//     properties and finds nothing) and text after the sink (edgeHub
//     ignores it).
//   - The source path is read as written, up to white space; edgeHub's
//     lexer would let "/*" in or before it start a comment when a "*/"
//     follows (so FROM /* INTO x /* y */ … would fail in edgeHub).
//   - x AND $body.y (a $body value on the right only) is accepted;
//     edgeHub's operand check rejects it, by a slip in its code.
//   - $body values of different types: = is false and != is true, as in
//     edgeHub, but < <= > >= are undefined where edgeHub orders them by an
//     internal type number (so in edgeHub $body.missing > 3 is true).
//   - is_null($body.x) is true when x is null; edgeHub's is inverted.
//   - - $body.x and $body.x % y work; edgeHub fails to compile them.
//   - Bodies are parsed as strict JSON. edgeHub uses Newtonsoft.Json,
//     which also accepts comments, single quotes and unquoted names, and
//     which turns strings that look like dates into dates, making
//     $body.timestamp undefined where tinyedge gives the string.
//   - twin_change_includes compiles in routes FROM /twinChangeNotifications.
//     edgeHub checks the route's source object type, which routes parsed
//     from a manifest never have, so in practice it rejects the function.
//   - $contentType must be exactly application/json, as in edgeHub:
//     "application/json; charset=utf-8" makes the body unqueryable.
package route
