"""api/types/tasks.py: the task types take their states and shared fields from one place."""

from __future__ import annotations

import asyncpg
from graphql import GraphQLEnumType

from factories import FakeTask, store
from graphql_helpers import execute
from tcgraph import model
from tcgraph.api.schema import build_schema
from tcgraph.config import Settings


def test_task_state_is_the_model_s_state() -> None:
    enum = build_schema().get_type_by_name("TaskState")
    assert enum is not None and enum.wrapped_cls is model.State  # type: ignore[union-attr]
    graphql_enum = build_schema()._schema.type_map["TaskState"]
    assert isinstance(graphql_enum, GraphQLEnumType)
    assert {name: value.value for name, value in graphql_enum.values.items()} == {
        state.name: state for state in model.State}


async def test_states_answer_and_filter_through_the_model_s_enum(
        pool: asyncpg.Pool, settings: Settings) -> None:
    failed = FakeTask(state="failed", task_group_id="TypesGroup")
    done = FakeTask(state="completed", task_group_id="TypesGroup")
    await store(pool, [failed, done])
    for sql_json in (True, False):
        result = await execute(pool, settings.with_(sql_json=sql_json), """{
            taskGroup(taskGroupId: "TypesGroup") { tasks(state: FAILED) {
                nodes { taskId status { state runs { state } } } } } }""")
        assert not result.errors
        assert result.data["taskGroup"]["tasks"]["nodes"] == [
            {"taskId": failed.task_id,
             "status": {"state": "FAILED", "runs": [{"state": "FAILED"}]}}]


SHARED = ["taskId", "provisionerId", "workerType", "taskQueueId", "schedulerId", "projectId",
          "taskGroupId", "priority", "deadline", "expires"]


def test_task_and_status_take_their_shared_fields_from_one_declaration() -> None:
    from strawberry.types.base import get_object_definition

    from tcgraph.api.types.tasks import Task, TaskRowFields, TaskStatus

    shared = [f for f in get_object_definition(TaskRowFields, strict=True).fields
              if f.base_resolver is not None]
    assert [f.python_name for f in shared] == [
        "task_id", "provisioner_id", "worker_type", "task_queue_id", "scheduler_id",
        "project_id", "task_group_id", "priority", "deadline", "expires"]
    for cls in (Task, TaskStatus):
        fields = {f.python_name: f for f in get_object_definition(cls, strict=True).fields}
        for field in shared:
            declared = fields[field.python_name]
            assert declared.base_resolver is not None and field.base_resolver is not None
            assert declared.base_resolver.wrapped_func is field.base_resolver.wrapped_func
            assert declared.metadata == field.metadata
    # The class that holds them is no GraphQL type of its own.
    assert build_schema().get_type_by_name("TaskRowFields") is None


async def test_task_and_status_answer_the_shared_fields_alike(
        pool: asyncpg.Pool, settings: Settings) -> None:
    task = FakeTask(task_group_id="SharedGroup")
    await store(pool, [task])
    fields = " ".join(SHARED)
    answers = []
    for sql_json in (True, False):
        result = await execute(pool, settings.with_(sql_json=sql_json), f"""{{
            task(taskId: "{task.task_id}") {{ {fields} status {{ {fields} }} }} }}""")
        assert not result.errors
        answer = result.data["task"]
        status = answer.pop("status")
        assert answer == status and answer["taskId"] == task.task_id
        answers.append(answer)
    assert answers[0] == answers[1]
