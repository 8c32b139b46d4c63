// PostGraphile v5 for `python -m bench` (bench/peer_v5.py starts it with Node 22).
//
// Configured as PostGraphile's documentation recommends for production: the
// Amber preset, grafserv on Node's own http server, GraphiQL and watch mode
// off, no explain, NODE_ENV=production (Grafast's production mode, set by the
// caller). Lists instead of Relay connections and no mutations, as
// PostGraphile v4 runs with `--simple-collections only` and
// `--disable-default-mutations`; non-null rows from setof functions, as v4's
// `--no-setof-functions-contain-nulls`. The same 20 MB body limit as v4.
//
// Environment: DATABASE_URL, SCHEMA, HOST, PORT, WORKERS (processes, one
// event loop each, sharing the port through node:cluster).
import cluster from "node:cluster";
import { createServer } from "node:http";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const workers = Number(process.env.WORKERS || "1");

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on("exit", (worker, code) => {
    console.error(`worker ${worker.process.pid} exited (${code})`);
    process.exit(1);
  });
} else {
  const preset = {
    extends: [PostGraphileAmberPreset],
    pgServices: [
      makePgService({
        connectionString: process.env.DATABASE_URL,
        schemas: [process.env.SCHEMA],
      }),
    ],
    gather: { installWatchFixtures: false },
    schema: {
      defaultBehavior: "-connection +list -insert -update -delete",
      pgForbidSetofFunctionsToReturnNull: true,
    },
    grafast: { explain: false },
    grafserv: {
      graphqlPath: "/graphql",
      graphiql: false,
      watch: false,
      websockets: false,
      maxRequestLength: 20 * 1024 * 1024,
    },
  };
  const pgl = postgraphile(preset);
  const serv = pgl.createServ(grafserv);
  const server = createServer();
  server.on("error", (e) => {
    console.error(e);
    process.exit(1);
  });
  serv.addTo(server).then(() => {
    server.listen(Number(process.env.PORT), process.env.HOST, () => {
      console.error(`postgraphile v5 listening on ${process.env.HOST}:${process.env.PORT}`);
    });
  });
}
