!> paramlib_valid_range: the per-input training ranges of a model file, read from its
!> metadata JSON (paramlib.json, DESIGN.md "Model file"):
!>   {"valid_range": {"<input name>": {"min": [nlev numbers], "max": [nlev numbers]}, ...}, ...}
!> Only that key is interpreted; every other value is skipped (but must be valid JSON).
!> A file without "valid_range" gives no ranges. Nothing here stops the program: errors come
!> back as status /= 0 with the position and what was expected.
module paramlib_valid_range
  use, intrinsic :: iso_fortran_env, only: real64
  implicit none
  private
  public :: field_range, parse_valid_range

  !> The training range of one input: lo(k) <= value(k) <= hi(k) for each of its levels.
  type :: field_range
    character(len=:), allocatable :: name
    real(real64), allocatable :: lo(:), hi(:)
  end type

  !> A cursor over the JSON text.
  type :: json_reader
    character(len=:), allocatable :: text
    integer :: pos = 1
    logical :: failed = .false.
    character(len=256) :: error = ''
  end type

contains

  !> ranges: one entry per input listed under "valid_range" (none when the key is absent).
  subroutine parse_valid_range(text, ranges, status, message)
    character(len=*), intent(in) :: text
    type(field_range), allocatable, intent(out) :: ranges(:)
    integer, intent(out) :: status
    character(len=*), intent(inout) :: message
    type(json_reader) :: json
    character(len=:), allocatable :: key

    allocate (ranges(0))
    json%text = text
    call expect(json, '{')
    if (.not. next_is(json, '}')) then
      do while (.not. json%failed)
        call read_string(json, key)
        call expect(json, ':')
        if (json%failed) exit
        if (key == 'valid_range') then
          call read_ranges(json, ranges)
        else
          call skip_value(json)
        end if
        if (.not. more_members(json, '}')) exit
      end do
    end if
    status = merge(1, 0, json%failed)
    if (json%failed) message = 'model metadata: ' // trim(json%error)
  end subroutine

  !> {"name": {"min": [...], "max": [...]}, ...}
  subroutine read_ranges(json, ranges)
    type(json_reader), intent(inout) :: json
    type(field_range), allocatable, intent(inout) :: ranges(:)
    type(field_range) :: entry
    character(len=:), allocatable :: key
    call expect(json, '{')
    if (next_is(json, '}')) return
    do while (.not. json%failed)
      call read_string(json, entry%name)
      call expect(json, ':')
      call expect(json, '{')
      if (json%failed) return
      if (allocated(entry%lo)) deallocate (entry%lo, entry%hi)
      if (.not. next_is(json, '}')) then
        do while (.not. json%failed)
          call read_string(json, key)
          call expect(json, ':')
          if (key == 'min') then
            call read_numbers(json, entry%lo)
          else if (key == 'max') then
            call read_numbers(json, entry%hi)
          else
            call skip_value(json)
          end if
          if (.not. more_members(json, '}')) exit
        end do
      end if
      if (json%failed) return
      if (.not. (allocated(entry%lo) .and. allocated(entry%hi))) then
        call fail(json, 'valid_range.' // entry%name // ' needs both "min" and "max"')
      else if (size(entry%lo) /= size(entry%hi)) then
        call fail(json, 'valid_range.' // entry%name // ': "min" and "max" differ in length')
      else
        ranges = [ranges, entry]
      end if
      if (.not. more_members(json, '}')) exit
    end do
  end subroutine

  !> [number, ...] into values.
  subroutine read_numbers(json, values)
    type(json_reader), intent(inout) :: json
    real(real64), allocatable, intent(out) :: values(:)
    real(real64) :: v
    integer :: start, ios
    allocate (values(0))
    call expect(json, '[')
    if (next_is(json, ']')) return
    do while (.not. json%failed)
      call skip_space(json)
      start = json%pos
      call skip_number(json)
      ios = 1
      if (json%pos > start) read (json%text(start:json%pos - 1), *, iostat=ios) v
      if (ios /= 0) then
        call fail(json, 'expected a number')
        return
      end if
      values = [values, v]
      if (.not. more_members(json, ']')) exit
    end do
  end subroutine

  !> Any JSON value, unread.
  recursive subroutine skip_value(json)
    type(json_reader), intent(inout) :: json
    character(len=:), allocatable :: ignored
    character :: c
    call skip_space(json)
    if (json%pos > len(json%text)) then
      call fail(json, 'unexpected end of the text')
      return
    end if
    c = json%text(json%pos:json%pos)
    select case (c)
    case ('"')
      call read_string(json, ignored)
    case ('{')
      json%pos = json%pos + 1
      if (next_is(json, '}')) return
      do while (.not. json%failed)
        call read_string(json, ignored)
        call expect(json, ':')
        call skip_value(json)
        if (.not. more_members(json, '}')) exit
      end do
    case ('[')
      json%pos = json%pos + 1
      if (next_is(json, ']')) return
      do while (.not. json%failed)
        call skip_value(json)
        if (.not. more_members(json, ']')) exit
      end do
    case ('t', 'f', 'n')
      do while (json%pos <= len(json%text))
        if (index('truefalsn', json%text(json%pos:json%pos)) == 0) exit
        json%pos = json%pos + 1
      end do
    case default
      call skip_number(json)
    end select
  end subroutine

  subroutine skip_number(json)
    type(json_reader), intent(inout) :: json
    integer :: start
    start = json%pos
    do while (json%pos <= len(json%text))
      if (index('+-0123456789.eE', json%text(json%pos:json%pos)) == 0) exit
      json%pos = json%pos + 1
    end do
    if (json%pos == start) call fail(json, 'expected a value')
  end subroutine

  !> "text" with JSON escapes (\" \\ \/ \n ... kept as the escaped character; \u as '?').
  subroutine read_string(json, s)
    type(json_reader), intent(inout) :: json
    character(len=:), allocatable, intent(out) :: s
    character :: c
    s = ''
    call expect(json, '"')
    do while (.not. json%failed)
      if (json%pos > len(json%text)) then
        call fail(json, 'unterminated string')
        return
      end if
      c = json%text(json%pos:json%pos)
      json%pos = json%pos + 1
      if (c == '"') return
      if (c == '\') then
        if (json%pos > len(json%text)) cycle
        c = json%text(json%pos:json%pos)
        json%pos = json%pos + 1
        if (c == 'u') then
          json%pos = json%pos + 4
          c = '?'
        end if
      end if
      s = s // c
    end do
  end subroutine

  !> After a member: .true. on ',' (another follows), .false. on close (consumed).
  logical function more_members(json, close)
    type(json_reader), intent(inout) :: json
    character, intent(in) :: close
    more_members = .false.
    if (json%failed) return
    if (next_is(json, ',')) then
      more_members = .true.
    else
      call expect(json, close)
    end if
  end function

  !> Consume c if it comes next (after white space).
  logical function next_is(json, c)
    type(json_reader), intent(inout) :: json
    character, intent(in) :: c
    call skip_space(json)
    next_is = .false.
    if (json%pos > len(json%text)) return
    next_is = json%text(json%pos:json%pos) == c
    if (next_is) json%pos = json%pos + 1
  end function

  subroutine expect(json, c)
    type(json_reader), intent(inout) :: json
    character, intent(in) :: c
    if (json%failed) return
    if (.not. next_is(json, c)) call fail(json, 'expected "' // c // '"')
  end subroutine

  subroutine skip_space(json)
    type(json_reader), intent(inout) :: json
    do while (json%pos <= len(json%text))
      if (index(' ' // achar(9) // achar(10) // achar(13), json%text(json%pos:json%pos)) == 0) exit
      json%pos = json%pos + 1
    end do
  end subroutine

  subroutine fail(json, what)
    type(json_reader), intent(inout) :: json
    character(len=*), intent(in) :: what
    if (json%failed) return
    json%failed = .true.
    write (json%error, '(a,i0)') 'paramlib.json: ' // what // ' at character ', json%pos
  end subroutine

end module paramlib_valid_range
